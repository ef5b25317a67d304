import Foundation

/// Softmax and log-softmax along one axis, computed stably (max subtracted) in one fused kernel.
extension Tensor {
    /// (outer, axis extent, inner) view of the tensor around `axis`.
    func splitAround(axis: Int) -> (outer: Int, extent: Int, inner: Int) {
        (Shape.product(shape, 0..<axis), shape[axis], Shape.product(shape, (axis + 1)..<rank))
    }

    private func softmaxKernel(axis: Int, logarithm: Bool) -> Tensor {
        let (outer, extent, inner) = splitAround(axis: axis)
        KernelCounters.count(.softmax, flops: 4 * count)
        let result = TensorStorage(uninitializedCount: count)
        let source = SendablePointer(storage.base), destination = SendablePointer(result.base)
        if inner == 1 {
            // Contiguous rows (the last axis): SIMD passes per row.
            Parallel.forEachChunk(count: outer, minimumChunk: Swift.max(1, 8192 / Swift.max(extent, 1))) { rows in
                for row in rows {
                    let x = source.base + row * extent, y = destination.base + row * extent
                    if logarithm {
                        VectorMath.logSoftmax(x, into: y, extent)
                    } else {
                        y.update(from: x, count: extent)
                        VectorMath.softmaxInPlace(y, extent)
                    }
                }
            }
            return Tensor(shape: shape, storage: result)
        }
        Parallel.forEachChunk(count: outer * inner, minimumChunk: Swift.max(1, 8192 / Swift.max(extent, 1))) { range in
            for lane in range {
                let o = lane / inner, i = lane % inner
                let x = source.base + o * extent * inner + i, y = destination.base + o * extent * inner + i
                var maximum = -Float.infinity
                for j in 0..<extent { maximum = Swift.max(maximum, x[j * inner]) }
                if maximum == -.infinity { maximum = 0 }
                var total: Float = 0
                for j in 0..<extent {
                    let e = FastMath.exp(x[j * inner] - maximum)
                    y[j * inner] = e
                    total += e
                }
                if logarithm {
                    let shift = maximum + Foundation.log(total)
                    for j in 0..<extent { y[j * inner] = x[j * inner] - shift }
                } else {
                    let scale = 1 / total
                    for j in 0..<extent { y[j * inner] *= scale }
                }
            }
        }
        return Tensor(shape: shape, storage: result)
    }

    /// `exp(x) / sum(exp(x))` along `axis`.
    public func softmax(alongAxis axis: Int = -1) -> Tensor {
        let axis = Shape.normalize(axis: axis, rank: rank, shape: shape)
        var result = softmaxKernel(axis: axis, logarithm: false)
        let y = result.detached()
        result.recordOperation("softmax", inputs: [self]) { g, _ in
            // dx = y · (g − Σ g·y)
            if axis == y.rank - 1 {
                let extent = y.shape[axis], rows = y.count / Swift.max(extent, 1)
                let dx = Tensor(shape: g.shape) { d in d.baseAddress?.update(from: g.storage.base, count: g.count) }
                let dp = SendablePointer(dx.storage.base), yp = SendablePointer(y.storage.base)
                Parallel.forEachChunk(count: rows, minimumChunk: Swift.max(1, 8192 / Swift.max(extent, 1))) { range in
                    for row in range { VectorMath.softmaxBackwardInPlace(gradient: dp.base + row * extent, output: yp.base + row * extent, extent) }
                }
                return [dx]
            }
            let dot = Tensor.zipElements(g, y, Element.Multiply()).reduceElements(axes: [axis], initial: 0, combine: Element.Add())
            return [Tensor.zipElements(y, Tensor.broadcastElements(g, dot, Element.Subtract()), Element.Multiply())]
        }
        return result
    }

    /// `x − log(sum(exp(x)))` along `axis`.
    public func logSoftmax(alongAxis axis: Int = -1) -> Tensor {
        let axis = Shape.normalize(axis: axis, rank: rank, shape: shape)
        var result = softmaxKernel(axis: axis, logarithm: true)
        let y = result.detached()
        result.recordOperation("log_softmax", inputs: [self]) { g, _ in
            // dx = g − softmax · Σ g
            let total = g.reduceElements(axes: [axis], initial: 0, combine: Element.Add())
            let probabilities = y.mapElements(Element.Exp())
            return [Tensor.zipElements(g, Tensor.broadcastElements(probabilities, total, Element.Multiply()), Element.Subtract())]
        }
        return result
    }
}
