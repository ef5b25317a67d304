/// A dense, row-major tensor of `Float` with value semantics.
///
/// Copies share storage until one of them is written (copy-on-write); ``reshaped(_:)`` and
/// ``squeezed(axes:)`` never copy. A tensor may carry an autodiff node: trainable leaves carry one
/// (see ``requiringGradient()``) and so does every result computed from them, which is how the engine
/// knows what backward work is needed and — for frozen tensors — what it may skip.
///
/// ```swift
/// let w = Tensor(randomNormal: [4, 3], generator: &rng).requiringGradient()
/// let x = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
/// let (loss, grads) = valueAndGradient(at: [w]) { p in x.matmul(p[0], transposeOther: true).sum() }
/// ```
public struct Tensor: @unchecked Sendable {
    /// Extent of each axis; `[]` is a scalar.
    public private(set) var shape: [Int]
    @usableFromInline var storage: TensorStorage
    /// Autodiff node: `nil` for constants and frozen leaves.
    @usableFromInline var node: AutodiffNode?

    @usableFromInline
    init(shape: [Int], storage: TensorStorage, node: AutodiffNode? = nil) {
        self.shape = shape
        self.storage = storage
        self.node = node
    }

    /// A tensor with the given shape and row-major scalars.
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "shape \(shape) has a negative extent")
        precondition(Shape.count(shape) == scalars.count,
                     "shape \(shape) needs \(Shape.count(shape)) scalars, got \(scalars.count)")
        let storage = TensorStorage(uninitializedCount: scalars.count)
        scalars.withUnsafeBufferPointer { storage.base.update(from: $0.baseAddress!, count: scalars.count) }
        self.init(shape: shape, storage: storage)
    }

    /// A rank-0 tensor.
    public init(_ scalar: Float) {
        self.init(shape: [], scalars: [scalar])
    }

    /// A tensor filled with `value`.
    public init(repeating value: Float, shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "shape \(shape) has a negative extent")
        self.init(shape: shape, storage: TensorStorage(repeating: value, count: Shape.count(shape)))
    }

    /// A tensor of zeros.
    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(repeating: 0, shape: shape) }

    /// A tensor of ones.
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(repeating: 1, shape: shape) }

    /// A tensor whose elements are written by `body` (which must write all of them).
    @inlinable
    public init(shape: [Int], initializingWith body: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        let storage = TensorStorage(uninitializedCount: Shape.count(shape))
        try body(UnsafeMutableBufferPointer(start: storage.base, count: storage.count))
        self.init(shape: shape, storage: storage)
    }

    /// Number of elements.
    @inlinable public var count: Int { storage.count }
    /// Number of axes.
    @inlinable public var rank: Int { shape.count }
    /// Row-major scalars (a copy).
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.base, count: storage.count)) }
    /// The value of a one-element tensor.
    public var scalar: Float {
        precondition(count == 1, "scalar needs a one-element tensor, shape is \(shape)")
        return storage.base[0]
    }

    /// Reads the elements without copying.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.base, count: storage.count))
    }

    /// Writes the elements in place, copying first if the storage is shared (copy-on-write).
    ///
    /// Writing detaches the tensor from autodiff: an in-place change is not differentiable.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return try body(UnsafeMutableBufferPointer(start: storage.base, count: storage.count))
    }

    /// Element at a multi-index (slow; for tests and small tensors).
    public subscript(indices: Int...) -> Float {
        precondition(indices.count == rank, "index \(indices) has \(indices.count) axes, shape is \(shape)")
        var offset = 0
        let strides = Shape.strides(shape)
        for (axis, index) in indices.enumerated() {
            precondition(index >= 0 && index < shape[axis], "index \(indices) is out of bounds for shape \(shape)")
            offset += index * strides[axis]
        }
        return storage.base[offset]
    }

    /// Whether backward passes compute a gradient for this tensor (it is a trainable leaf or depends on one).
    public var requiresGradient: Bool { node != nil }

    /// This tensor as a fresh trainable leaf: gradients will be computed for it.
    public func requiringGradient() -> Tensor {
        Tensor(shape: shape, storage: storage, node: AutodiffNode(leafShape: shape))
    }

    /// This tensor as a constant: no gradient flows into or through it.
    public func detached() -> Tensor {
        Tensor(shape: shape, storage: storage)
    }

    /// Same storage viewed with a new shape (no copy). One extent may be `-1` (inferred).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let inferred = newShape.firstIndex(of: -1) {
            precondition(newShape.filter { $0 == -1 }.count == 1, "reshape to \(newShape): at most one -1")
            let known = newShape.enumerated().filter { $0.offset != inferred }.reduce(1) { $0 * $1.element }
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            resolved[inferred] = count / known
        }
        precondition(Shape.count(resolved) == count,
                     "cannot reshape \(shape) (\(count) elements) to \(newShape) (\(Shape.count(resolved)) elements)")
        var result = Tensor(shape: resolved, storage: storage)
        let inputShape = shape
        result.recordOperation("reshape", inputs: [self]) { grad, _ in [grad.reshaped(inputShape)] }
        return result
    }

    /// Removes size-1 axes (all of them, or only `axes`). No copy.
    public func squeezed(axes: [Int]? = nil) -> Tensor {
        let drop = axes.map { Set(Shape.normalize(axes: $0, shape: shape)) } ?? Set(shape.indices.filter { shape[$0] == 1 })
        for axis in drop {
            precondition(shape[axis] == 1, "cannot squeeze axis \(axis) of shape \(shape): extent is \(shape[axis])")
        }
        return reshaped(shape.indices.filter { !drop.contains($0) }.map { shape[$0] })
    }

    /// Inserts a size-1 axis at `axis`. No copy.
    public func expandingShape(at axis: Int) -> Tensor {
        let position = axis < 0 ? axis + rank + 1 : axis
        precondition(position >= 0 && position <= rank, "cannot insert axis \(axis) into shape \(shape)")
        var newShape = shape
        newShape.insert(1, at: position)
        return reshaped(newShape)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let preview = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(preview)\(count > 8 ? ", …" : "")]\(requiresGradient ? ", requiresGradient" : ""))"
    }
}
