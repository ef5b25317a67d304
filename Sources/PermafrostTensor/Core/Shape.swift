/// Shape arithmetic shared by the kernels: element counts, row-major strides, NumPy broadcasting and
/// axis normalisation.
public enum Shape {
    /// Number of elements in a tensor of `shape` (1 for a scalar).
    @inlinable
    public static func count(_ shape: [Int]) -> Int {
        var result = 1
        for dimension in shape { result *= dimension }
        return result
    }

    /// Row-major strides, in elements.
    @inlinable
    public static func strides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= shape[axis]
        }
        return strides
    }

    /// The NumPy broadcast of two shapes, or `nil` when they are incompatible.
    public static func broadcast(_ lhs: [Int], _ rhs: [Int]) -> [Int]? {
        let rank = max(lhs.count, rhs.count)
        var result = [Int](repeating: 1, count: rank)
        for i in 0..<rank {
            let l = i < rank - lhs.count ? 1 : lhs[i - (rank - lhs.count)]
            let r = i < rank - rhs.count ? 1 : rhs[i - (rank - rhs.count)]
            if l == r || r == 1 {
                result[i] = l
            } else if l == 1 {
                result[i] = r
            } else {
                return nil
            }
        }
        return result
    }

    /// Strides of `shape` as seen when broadcast to `target` (0 along broadcast axes).
    static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let own = strides(shape)
        let offset = target.count - shape.count
        var result = [Int](repeating: 0, count: target.count)
        for i in 0..<shape.count where shape[i] != 1 {
            result[i + offset] = own[i]
        }
        return result
    }

    /// Resolves a possibly negative axis against `rank`, with a message naming the shape on error.
    @inlinable
    public static func normalize(axis: Int, rank: Int, shape: [Int]) -> Int {
        let resolved = axis < 0 ? axis + rank : axis
        precondition(resolved >= 0 && resolved < rank, "axis \(axis) is out of range for shape \(shape)")
        return resolved
    }

    /// Sorted, de-duplicated, non-negative axes.
    public static func normalize(axes: [Int], shape: [Int]) -> [Int] {
        Array(Set(axes.map { normalize(axis: $0, rank: shape.count, shape: shape) })).sorted()
    }

    /// Product of `shape[range]`.
    @inlinable
    static func product(_ shape: [Int], _ range: Range<Int>) -> Int {
        var result = 1
        for i in range { result *= shape[i] }
        return result
    }
}
