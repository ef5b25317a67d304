/// Sum, mean, max and variance over axes, with `keepingDimensions` as in NumPy's `keepdims`.
extension Tensor {
    private func reducedShape(_ axes: [Int], keeping: Bool) -> [Int] {
        keeping ? shape.enumerated().map { axes.contains($0.offset) ? 1 : $0.element }
            : shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
    }

    /// Sum over `axes` (all axes when `nil`).
    public func sum(alongAxes axes: [Int]? = nil, keepingDimensions: Bool = false) -> Tensor {
        let axes = axes.map { Shape.normalize(axes: $0, shape: shape) } ?? Array(0..<rank)
        var result = reduceElements(axes: axes, initial: 0, combine: Element.Add()).reshaped(reducedShape(axes, keeping: keepingDimensions))
        let keptShape = reducedShape(axes, keeping: true), inputShape = shape
        result.recordOperation("sum", inputs: [self]) { g, _ in [g.reshaped(keptShape).broadcast(to: inputShape)] }
        return result
    }

    /// Mean over `axes` (all axes when `nil`).
    public func mean(alongAxes axes: [Int]? = nil, keepingDimensions: Bool = false) -> Tensor {
        let axes = axes.map { Shape.normalize(axes: $0, shape: shape) } ?? Array(0..<rank)
        let n = axes.reduce(1) { $0 * shape[$1] }
        return sum(alongAxes: axes, keepingDimensions: keepingDimensions) * (1 / Float(Swift.max(n, 1)))
    }

    /// Maximum over `axes` (all axes when `nil`). The gradient is shared equally by tied maxima
    /// (as PyTorch's `amax`).
    public func max(alongAxes axes: [Int]? = nil, keepingDimensions: Bool = false) -> Tensor {
        let axes = axes.map { Shape.normalize(axes: $0, shape: shape) } ?? Array(0..<rank)
        let kept = reduceElements(axes: axes, initial: -.infinity, combine: Element.Maximum())
        var result = kept.reshaped(reducedShape(axes, keeping: keepingDimensions))
        let input = detached(), keptShape = kept.shape
        result.recordOperation("max", inputs: [self]) { g, _ in
            let isMax = Tensor.broadcastElements(input, kept, Element.IsEqual())
            let ties = isMax.reduceElements(axes: axes, initial: 0, combine: Element.Add())
            let share = Tensor.zipElements(g.reshaped(keptShape), ties, Element.Divide())
            return [Tensor.broadcastElements(isMax, share, Element.Multiply())]
        }
        return result
    }

    /// Variance over `axes`; `unbiased` divides by n − 1 (PyTorch's default for `var`).
    public func variance(alongAxes axes: [Int]? = nil, keepingDimensions: Bool = false, unbiased: Bool = false) -> Tensor {
        let axes = axes.map { Shape.normalize(axes: $0, shape: shape) } ?? Array(0..<rank)
        let n = axes.reduce(1) { $0 * shape[$1] }
        let centered = self - mean(alongAxes: axes, keepingDimensions: true)
        let divisor = Float(unbiased ? n - 1 : n)
        precondition(divisor > 0, "variance over \(n) element(s) with unbiased=\(unbiased) is undefined")
        return centered.squared().sum(alongAxes: axes, keepingDimensions: keepingDimensions) * (1 / divisor)
    }
}
