/// Element-wise map kernels. Chunks run in parallel once a tensor is large enough to pay for the
/// fork-join; the per-element closures are inlined into the loops, which auto-vectorise.
extension Tensor {
    /// `f` applied to every element (no autodiff).
    @inline(__always)
    func mapElements<F: UnaryElementFunction>(_ f: F) -> Tensor {
        KernelCounters.count(.elementwise, flops: count)
        let result = TensorStorage(uninitializedCount: count)
        let source = SendablePointer(storage.base), destination = SendablePointer(result.base)
        Parallel.forEachChunk(count: count) { range in
            for i in range { destination.base[i] = f(source.base[i]) }
        }
        return Tensor(shape: shape, storage: result)
    }

    /// `f` applied to every element in place (no autodiff). The storage must not be shared.
    @inline(__always)
    mutating func updateElements<F: UnaryElementFunction>(_ f: F) {
        precondition(isKnownUniquelyReferenced(&storage), "updateElements on a shared buffer")
        KernelCounters.count(.elementwise, flops: count)
        let values = SendablePointer(storage.base)
        Parallel.forEachChunk(count: count) { range in
            for i in range { values.base[i] = f(values.base[i]) }
        }
    }

    /// `f` applied element by element to two tensors of the same shape (no autodiff).
    @inline(__always)
    static func zipElements<F: BinaryElementFunction>(_ a: Tensor, _ b: Tensor, _ f: F) -> Tensor {
        precondition(a.shape == b.shape, "element-wise kernel needs equal shapes, got \(a.shape) and \(b.shape)")
        KernelCounters.count(.elementwise, flops: a.count)
        let result = TensorStorage(uninitializedCount: a.count)
        let x = SendablePointer(a.storage.base), y = SendablePointer(b.storage.base)
        let destination = SendablePointer(result.base)
        Parallel.forEachChunk(count: a.count) { range in
            for i in range { destination.base[i] = f(x.base[i], y.base[i]) }
        }
        return Tensor(shape: a.shape, storage: result)
    }

    /// `f` applied element by element to three tensors of the same shape (no autodiff).
    @inline(__always)
    static func zipElements<F: TernaryElementFunction>(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ f: F) -> Tensor {
        precondition(a.shape == b.shape && b.shape == c.shape,
                     "element-wise kernel needs equal shapes, got \(a.shape), \(b.shape) and \(c.shape)")
        KernelCounters.count(.elementwise, flops: a.count)
        let result = TensorStorage(uninitializedCount: a.count)
        let x = SendablePointer(a.storage.base), y = SendablePointer(b.storage.base), z = SendablePointer(c.storage.base)
        let destination = SendablePointer(result.base)
        Parallel.forEachChunk(count: a.count) { range in
            for i in range { destination.base[i] = f(x.base[i], y.base[i], z.base[i]) }
        }
        return Tensor(shape: a.shape, storage: result)
    }

    /// `f(a, b)` with NumPy broadcasting (no autodiff).
    @inline(__always)
    static func broadcastElements<F: BinaryElementFunction>(_ a: Tensor, _ b: Tensor, _ f: F) -> Tensor {
        if a.shape == b.shape { return zipElements(a, b, f) }
        guard let shape = Shape.broadcast(a.shape, b.shape) else {
            preconditionFailure("shapes \(a.shape) and \(b.shape) cannot be broadcast together")
        }
        let count = Shape.count(shape)
        KernelCounters.count(.elementwise, flops: count)
        let result = TensorStorage(uninitializedCount: count)
        let x = SendablePointer(a.storage.base), y = SendablePointer(b.storage.base)
        let destination = SendablePointer(result.base)
        if b.count == 1 {
            let s = b.storage.base[0]
            Parallel.forEachChunk(count: count) { range in
                for i in range { destination.base[i] = f(x.base[i], s) }
            }
        } else if a.count == 1 {
            let s = a.storage.base[0]
            Parallel.forEachChunk(count: count) { range in
                for i in range { destination.base[i] = f(s, y.base[i]) }
            }
        } else {
            let layout = BroadcastLayout(shape: shape, a: a.shape, b: b.shape)
            let inner = layout.shape.last ?? 1
            let innerA = layout.stridesA.last ?? 0, innerB = layout.stridesB.last ?? 0
            let rows = count / Swift.max(inner, 1)
            Parallel.forEachChunk(count: rows, minimumChunk: Swift.max(1, 32_768 / Swift.max(inner, 1))) { rowRange in
                for row in rowRange {
                    let (offsetA, offsetB) = layout.offsets(row: row)
                    let out = destination.base + row * inner
                    let pa = x.base + offsetA, pb = y.base + offsetB
                    switch (innerA, innerB) {
                    case (1, 1): for j in 0..<inner { out[j] = f(pa[j], pb[j]) }
                    case (1, 0): let s = pb[0]; for j in 0..<inner { out[j] = f(pa[j], s) }
                    case (0, 1): let s = pa[0]; for j in 0..<inner { out[j] = f(s, pb[j]) }
                    default: for j in 0..<inner { out[j] = f(pa[j * innerA], pb[j * innerB]) }
                    }
                }
            }
        }
        return Tensor(shape: shape, storage: result)
    }
}

/// Output shape and per-operand strides of a broadcast, with adjacent axes merged where both
/// operands are contiguous across them, so the inner loop is as long as possible.
struct BroadcastLayout: Sendable {
    var shape: [Int]
    var stridesA: [Int]
    var stridesB: [Int]

    init(shape: [Int], a: [Int], b: [Int]) {
        var dims = shape
        var sa = Shape.broadcastStrides(a, to: shape)
        var sb = Shape.broadcastStrides(b, to: shape)
        // Drop size-1 axes, then merge neighbours that are contiguous for both operands.
        let keep = dims.indices.filter { dims[$0] != 1 }
        guard !keep.isEmpty else {
            // A single element (rank 0 or all extents 1).
            (self.shape, self.stridesA, self.stridesB) = ([1], [0], [0])
            return
        }
        dims = keep.map { dims[$0] }; sa = keep.map { sa[$0] }; sb = keep.map { sb[$0] }
        var i = dims.count - 2
        while i >= 0 {
            if sa[i] == sa[i + 1] * dims[i + 1] && sb[i] == sb[i + 1] * dims[i + 1] {
                dims[i] *= dims[i + 1]
                sa[i] = sa[i + 1]; sb[i] = sb[i + 1]
                dims.remove(at: i + 1); sa.remove(at: i + 1); sb.remove(at: i + 1)
            }
            i -= 1
        }
        self.shape = dims
        self.stridesA = sa
        self.stridesB = sb
    }

    /// Offsets into A and B of the start of output row `row` (a row spans the last merged axis).
    @inline(__always)
    func offsets(row: Int) -> (Int, Int) {
        var remaining = row
        var oa = 0, ob = 0
        var axis = shape.count - 2
        while axis >= 0 {
            let extent = shape[axis]
            let index = remaining % extent
            remaining /= extent
            oa += index * stridesA[axis]
            ob += index * stridesB[axis]
            axis -= 1
        }
        return (oa, ob)
    }
}
