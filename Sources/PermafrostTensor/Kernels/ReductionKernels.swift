/// Reduction kernels over an arbitrary set of axes.
///
/// The input is viewed as rows along its last axis; each row adds (or maxes) into the output
/// element(s) its index maps to. Axes are first merged where possible, so the common cases — a
/// trailing reduction, a leading reduction (bias gradients), a middle block (norm statistics) — run
/// as long contiguous loops.
extension Tensor {
    /// Reduction of `self` over `axes` (sorted, non-negative) to the shape with those axes set to 1.
    @inline(__always)
    func reduceElements<F: BinaryElementFunction>(axes: [Int], initial: Float, combine: F) -> Tensor {
        var keptShape = shape
        for axis in axes { keptShape[axis] = 1 }
        let outputCount = Shape.count(keptShape)
        KernelCounters.count(.reduction, flops: count)
        let result = TensorStorage(repeating: initial, count: outputCount)
        guard count > 0 else { return Tensor(shape: keptShape, storage: result) }
        let layout = BroadcastLayout(shape: shape, a: shape, b: keptShape)
        let inner = layout.shape.last ?? 1
        let innerReduced = (layout.stridesB.last ?? 0) == 0 && inner > 1
        let rows = count / inner
        let input = storage.base, output = result.base

        if innerReduced && !layout.stridesB.dropLast().contains(0) {
            // Each row reduces to its own output element: rows are independent.
            let source = SendablePointer(input), destination = SendablePointer(output)
            Parallel.forEachChunk(count: rows, minimumChunk: Swift.max(1, 32_768 / inner)) { range in
                for row in range {
                    let p = source.base + row * inner
                    var a0 = initial, a1 = initial, a2 = initial, a3 = initial
                    var j = 0
                    while j + 4 <= inner {
                        a0 = combine(a0, p[j]); a1 = combine(a1, p[j + 1])
                        a2 = combine(a2, p[j + 2]); a3 = combine(a3, p[j + 3])
                        j += 4
                    }
                    while j < inner { a0 = combine(a0, p[j]); j += 1 }
                    let (_, offset) = layout.offsets(row: row)
                    destination.base[offset] = combine(combine(a0, a1), combine(a2, a3))
                }
            }
        } else {
            for row in 0..<rows {
                let (_, offset) = layout.offsets(row: row)
                let p = input + row * inner
                if innerReduced {
                    var a = output[offset]
                    for j in 0..<inner { a = combine(a, p[j]) }
                    output[offset] = a
                } else {
                    let q = output + offset
                    for j in 0..<inner { q[j] = combine(q[j], p[j]) }
                }
            }
        }
        return Tensor(shape: keptShape, storage: result)
    }
}
