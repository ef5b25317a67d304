import Foundation

/// Element-wise functions and activations with their gradients.
extension Tensor {
    /// Records a unary operation whose gradient is `g · f'(x, y)`, computed by `derivative`
    /// from the input `x`, the output `y` and the incoming gradient `g`.
    @inline(__always)
    private func unary(
        _ name: String, _ forward: (Float) -> Float,
        derivative: @escaping (_ g: Float, _ x: Float, _ y: Float) -> Float
    ) -> Tensor {
        var result = mapElements(forward)
        let input = detached(), output = result.detached()
        result.recordOperation(name, inputs: [self]) { g, _ in
            [Tensor.zipElements(g, input, output, derivative)]
        }
        return result
    }

    public func exp() -> Tensor { unary("exp", Foundation.exp) { g, _, y in g * y } }
    public func log() -> Tensor { unary("log", Foundation.log) { g, x, _ in g / x } }
    public func sqrt() -> Tensor { unary("sqrt", Foundation.sqrt) { g, _, y in g * 0.5 / y } }
    public func rsqrt() -> Tensor { unary("rsqrt", { 1 / Foundation.sqrt($0) }) { g, _, y in -0.5 * g * y * y * y } }
    public func abs() -> Tensor { unary("abs", Swift.abs) { g, x, _ in x > 0 ? g : (x < 0 ? -g : 0) } }
    public func squared() -> Tensor { unary("square", { $0 * $0 }) { g, x, _ in 2 * g * x } }

    /// `self` raised to a constant power.
    public func pow(_ exponent: Float) -> Tensor {
        if exponent == 2 { return squared() }
        return unary("pow", { Foundation.pow($0, exponent) }) { g, x, _ in g * exponent * Foundation.pow(x, exponent - 1) }
    }

    /// `self` raised element-wise to `exponent`, with broadcasting. Gradients need `self > 0` where
    /// the exponent requires one.
    public func pow(_ exponent: Tensor) -> Tensor {
        var result = Tensor.broadcastElements(self, exponent, Foundation.pow)
        let base = detached(), power = exponent.detached(), output = result.detached()
        result.recordOperation("pow", inputs: [self, exponent]) { g, needs in
            let shape = g.shape
            let b = base.broadcast(to: shape), p = power.broadcast(to: shape)
            return [
                needs[0] ? Tensor.zipElements(g, b, p) { g, x, p in g * p * Foundation.pow(x, p - 1) }.summed(toShape: base.shape) : nil,
                needs[1] ? Tensor.zipElements(g, b, output) { g, x, y in g * y * Foundation.log(x) }.summed(toShape: power.shape) : nil,
            ]
        }
        return result
    }

    /// Limits every element to `[minimum, maximum]`; the gradient is passed where the input lies inside.
    public func clamped(min minimum: Float = -.infinity, max maximum: Float = .infinity) -> Tensor {
        precondition(minimum <= maximum, "clamp range [\(minimum), \(maximum)] is empty")
        return unary("clamp", { Swift.min(Swift.max($0, minimum), maximum) }) { g, x, _ in
            x >= minimum && x <= maximum ? g : 0
        }
    }

    public func tanh() -> Tensor { unary("tanh", Foundation.tanh) { g, _, y in g * (1 - y * y) } }

    public func sigmoid() -> Tensor {
        unary("sigmoid", { 1 / (1 + Foundation.exp(-$0)) }) { g, _, y in g * y * (1 - y) }
    }

    public func relu() -> Tensor { unary("relu", { $0 > 0 ? $0 : 0 }) { g, x, _ in x > 0 ? g : 0 } }

    /// x · sigmoid(x) (also called swish).
    public func silu() -> Tensor {
        unary("silu", { $0 / (1 + Foundation.exp(-$0)) }) { g, x, _ in
            let s = 1 / (1 + Foundation.exp(-x))
            return g * s * (1 + x * (1 - s))
        }
    }

    /// How ``gelu(approximation:)`` evaluates the Gaussian CDF.
    public enum GELUApproximation: Sendable {
        /// Exact: `0.5·x·(1 + erf(x/√2))` (PyTorch's default).
        case none
        /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (PyTorch's `approximate="tanh"`).
        case tanh
    }

    public func gelu(approximation: GELUApproximation = .none) -> Tensor {
        switch approximation {
        case .none:
            let invSqrt2: Float = 0.70710678118654752
            let invSqrt2Pi: Float = 0.39894228040143268
            return unary("gelu", { 0.5 * $0 * (1 + Foundation.erf($0 * invSqrt2)) }) { g, x, _ in
                g * (0.5 * (1 + Foundation.erf(x * invSqrt2)) + x * invSqrt2Pi * Foundation.exp(-0.5 * x * x))
            }
        case .tanh:
            let c: Float = 0.79788456080286536, k: Float = 0.044715
            return unary("gelu_tanh", { x in 0.5 * x * (1 + Foundation.tanh(c * (x + k * x * x * x))) }) { g, x, _ in
                let t = Foundation.tanh(c * (x + k * x * x * x))
                return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x))
            }
        }
    }

    /// This tensor broadcast (materialised) to `shape`; the gradient sums back.
    public func broadcast(to target: [Int]) -> Tensor {
        if shape == target { return self }
        precondition(Shape.broadcast(shape, target) == target, "cannot broadcast shape \(shape) to \(target)")
        var result = Tensor.broadcastElements(Tensor.zeros(target), detached()) { _, b in b }
        let source = shape
        result.recordOperation("broadcast", inputs: [self]) { g, _ in [g.summed(toShape: source)] }
        return result
    }
}

/// Free-function spellings, as in NumPy and PyTorch.
public func exp(_ x: Tensor) -> Tensor { x.exp() }
public func log(_ x: Tensor) -> Tensor { x.log() }
public func sqrt(_ x: Tensor) -> Tensor { x.sqrt() }
public func tanh(_ x: Tensor) -> Tensor { x.tanh() }
public func abs(_ x: Tensor) -> Tensor { x.abs() }
public func relu(_ x: Tensor) -> Tensor { x.relu() }
public func sigmoid(_ x: Tensor) -> Tensor { x.sigmoid() }
public func silu(_ x: Tensor) -> Tensor { x.silu() }
public func gelu(_ x: Tensor, approximation: Tensor.GELUApproximation = .none) -> Tensor { x.gelu(approximation: approximation) }
