/// Copying shape operations: slice, concatenate, split, stack, permute.
extension Tensor {
    /// Elements `start, start+step, …` (below `end`) along `axis`; negative bounds count from the end.
    public func slice(alongAxis axis: Int, from start: Int, to end: Int? = nil, step: Int = 1) -> Tensor {
        let axis = Shape.normalize(axis: axis, rank: rank, shape: shape)
        let extent = shape[axis]
        let lower = start < 0 ? start + extent : start
        let upper = end.map { $0 < 0 ? $0 + extent : Swift.min($0, extent) } ?? extent
        precondition(step > 0, "slice step must be positive, got \(step)")
        precondition(lower >= 0 && lower <= upper && upper <= extent,
                     "slice \(start)..<\(end.map(String.init) ?? "end") is out of range for axis \(axis) of shape \(shape)")
        let length = (upper - lower + step - 1) / step
        let (outer, _, inner) = splitAround(axis: axis)
        var newShape = shape
        newShape[axis] = length
        KernelCounters.count(.copy, flops: 0)
        var result = Tensor(shape: newShape) { out in
            for o in 0..<outer {
                for j in 0..<length {
                    (out.baseAddress! + (o * length + j) * inner)
                        .update(from: storage.base + (o * extent + lower + j * step) * inner, count: inner)
                }
            }
        }
        let inputShape = shape
        result.recordOperation("slice", inputs: [self]) { g, _ in
            let d = Tensor.zeros(inputShape)
            let base = d.storage.base
            for o in 0..<outer {
                for j in 0..<length {
                    (base + (o * extent + lower + j * step) * inner)
                        .update(from: g.storage.base + (o * length + j) * inner, count: inner)
                }
            }
            return [d]
        }
        return result
    }

    /// Joins tensors along `axis`; all other extents must agree.
    public static func concatenate(_ tensors: [Tensor], alongAxis axis: Int = 0) -> Tensor {
        precondition(!tensors.isEmpty, "concatenate needs at least one tensor")
        let first = tensors[0]
        let axis = Shape.normalize(axis: axis, rank: first.rank, shape: first.shape)
        for t in tensors {
            var a = t.shape, b = first.shape
            precondition(a.count == b.count, "concatenate: shapes \(first.shape) and \(t.shape) differ in rank")
            a[axis] = 0; b[axis] = 0
            precondition(a == b, "concatenate along axis \(axis): shapes \(first.shape) and \(t.shape) differ off that axis")
        }
        let extents = tensors.map { $0.shape[axis] }
        let total = extents.reduce(0, +)
        let (outer, _, inner) = first.splitAround(axis: axis)
        var newShape = first.shape
        newShape[axis] = total
        KernelCounters.count(.copy)
        var result = Tensor(shape: newShape) { out in
            var offset = 0
            for (t, extent) in zip(tensors, extents) {
                for o in 0..<outer {
                    (out.baseAddress! + (o * total + offset) * inner)
                        .update(from: t.storage.base + o * extent * inner, count: extent * inner)
                }
                offset += extent
            }
        }
        result.recordOperation("concatenate", inputs: tensors) { g, needs in
            var offset = 0
            return extents.enumerated().map { index, extent in
                defer { offset += extent }
                return needs[index] ? g.slice(alongAxis: axis, from: offset, to: offset + extent) : nil
            }
        }
        return result
    }

    /// Splits along `axis` into pieces of the given sizes (which must add up to the extent).
    public func split(sizes: [Int], alongAxis axis: Int = 0) -> [Tensor] {
        let axisIndex = Shape.normalize(axis: axis, rank: rank, shape: shape)
        precondition(sizes.reduce(0, +) == shape[axisIndex], "split sizes \(sizes) do not add up to extent \(shape[axisIndex]) of axis \(axis) in shape \(shape)")
        var offset = 0
        return sizes.map { size in
            defer { offset += size }
            return slice(alongAxis: axisIndex, from: offset, to: offset + size)
        }
    }

    /// Stacks equal-shaped tensors along a new axis.
    public static func stack(_ tensors: [Tensor], alongAxis axis: Int = 0) -> Tensor {
        precondition(!tensors.isEmpty, "stack needs at least one tensor")
        for t in tensors { precondition(t.shape == tensors[0].shape, "stack: shapes \(tensors[0].shape) and \(t.shape) differ") }
        return concatenate(tensors.map { $0.expandingShape(at: axis) }, alongAxis: axis)
    }

    /// Reorders axes: result axis `i` is input axis `permutation[i]`.
    public func permuted(_ permutation: [Int]) -> Tensor {
        precondition(permutation.count == rank && Set(permutation) == Set(0..<rank),
                     "permutation \(permutation) is not a permutation of the \(rank) axes of shape \(shape)")
        if permutation == Array(0..<rank) { return self }
        let newShape = permutation.map { shape[$0] }
        let inputStrides = Shape.strides(shape)
        let sourceStrides = permutation.map { inputStrides[$0] }
        let inner = newShape.last ?? 1, innerStride = sourceStrides.last ?? 1
        let rows = count / Swift.max(inner, 1)
        KernelCounters.count(.copy)
        let source = SendablePointer(storage.base)
        let result = TensorStorage(uninitializedCount: count)
        let destination = SendablePointer(result.base)
        Parallel.forEachChunk(count: rows, minimumChunk: Swift.max(1, 16_384 / Swift.max(inner, 1))) { range in
            for row in range {
                var remaining = row, offset = 0
                for axis in stride(from: newShape.count - 2, through: 0, by: -1) {
                    offset += (remaining % newShape[axis]) * sourceStrides[axis]
                    remaining /= newShape[axis]
                }
                let out = destination.base + row * inner, src = source.base + offset
                for j in 0..<inner { out[j] = src[j * innerStride] }
            }
        }
        var output = Tensor(shape: newShape, storage: result)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, p) in permutation.enumerated() { inverse[p] = i }
        output.recordOperation("permute", inputs: [self]) { g, _ in [g.permuted(inverse)] }
        return output
    }

    /// Swaps the last two axes.
    public func transposed() -> Tensor {
        precondition(rank >= 2, "transposed needs rank ≥ 2, got shape \(shape)")
        var permutation = Array(0..<rank)
        permutation.swapAt(rank - 1, rank - 2)
        return permuted(permutation)
    }
}
