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
