import Foundation

/// Element functions as types. Generic kernels specialise on them, so the function is inlined into
/// the (parallel, vectorisable) loop; a closure handed into a parallel loop stays an opaque call per
/// element, which measured 10–20× slower.
public protocol UnaryElementFunction {
    func callAsFunction(_ x: Float) -> Float
}

public protocol BinaryElementFunction {
    func callAsFunction(_ a: Float, _ b: Float) -> Float
}

public protocol TernaryElementFunction {
    func callAsFunction(_ a: Float, _ b: Float, _ c: Float) -> Float
}

enum Element {
    // MARK: Binary
    struct Add: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { a + b } }
    struct Subtract: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { a - b } }
    struct Multiply: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { a * b } }
    struct Divide: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { a / b } }
    /// `−a / b`: the divisor's gradient given `g·quotient`.
    struct NegatedQuotient: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { -a / b } }
    struct Maximum: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { Swift.max(a, b) } }
    struct IsEqual: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { a == b ? 1 : 0 } }
    struct Second: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { b } }
    struct Power: BinaryElementFunction { @inline(__always) func callAsFunction(_ a: Float, _ b: Float) -> Float { Foundation.pow(a, b) } }

    // MARK: Unary
    struct Negate: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { -x } }
    struct Scale: UnaryElementFunction { let factor: Float; @inline(__always) func callAsFunction(_ x: Float) -> Float { x * factor } }
    struct Exp: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { FastMath.exp(x) } }
    struct Log: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { Foundation.log(x) } }
    struct Sqrt: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x.squareRoot() } }
    struct Rsqrt: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { 1 / x.squareRoot() } }
    struct Abs: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { Swift.abs(x) } }
    struct Square: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x * x } }
    struct PowerOf: UnaryElementFunction { let exponent: Float; @inline(__always) func callAsFunction(_ x: Float) -> Float { Foundation.pow(x, exponent) } }
    struct Clamp: UnaryElementFunction {
        let lower: Float, upper: Float
        @inline(__always) func callAsFunction(_ x: Float) -> Float { Swift.min(Swift.max(x, lower), upper) }
    }
    struct Tanh: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { FastMath.tanh(x) } }
    struct Sigmoid: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { FastMath.sigmoid(x) } }
    struct ReLU: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x > 0 ? x : 0 } }
    struct SiLU: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x * FastMath.sigmoid(x) } }
    struct GELU: UnaryElementFunction {
        @inline(__always) func callAsFunction(_ x: Float) -> Float { 0.5 * x * FastMath.onePlusErf(x * 0.70710678118654752) }
    }
    struct GELUTanh: UnaryElementFunction {
        @inline(__always) func callAsFunction(_ x: Float) -> Float {
            0.5 * x * (1 + FastMath.tanh(0.79788456080286536 * (x + 0.044715 * x * x * x)))
        }
    }
    /// 0 where allowed (non-zero), −∞ where masked.
    struct MaskToAdditive: UnaryElementFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x != 0 ? 0 : -.infinity } }

    // MARK: Derivatives (g, x, y) → g·f′(x), with y = f(x)
    struct ExpGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g * y } }
    struct LogGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g / x } }
    struct SqrtGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g * 0.5 / y } }
    struct RsqrtGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { -0.5 * g * y * y * y } }
    struct AbsGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { x > 0 ? g : (x < 0 ? -g : 0) } }
    struct SquareGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { 2 * g * x } }
    struct PowerOfGradient: TernaryElementFunction {
        let exponent: Float
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g * exponent * Foundation.pow(x, exponent - 1) }
    }
    struct ClampGradient: TernaryElementFunction {
        let lower: Float, upper: Float
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { x >= lower && x <= upper ? g : 0 }
    }
    struct TanhGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g * (1 - y * y) } }
    struct SigmoidGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g * y * (1 - y) } }
    struct ReLUGradient: TernaryElementFunction { @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { x > 0 ? g : 0 } }
    struct SiLUGradient: TernaryElementFunction {
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float {
            let s = FastMath.sigmoid(x)
            return g * s * (1 + x * (1 - s))
        }
    }
    struct GELUGradient: TernaryElementFunction {
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float {
            g * (0.5 * FastMath.onePlusErf(x * 0.70710678118654752) + x * 0.39894228040143268 * FastMath.exp(-0.5 * x * x))
        }
    }
    struct GELUTanhGradient: TernaryElementFunction {
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float {
            let c: Float = 0.79788456080286536, k: Float = 0.044715
            let t = FastMath.tanh(c * (x + k * x * x * x))
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x))
        }
    }
    /// d/dbase of base^p: (g, base, p).
    struct PowerBaseGradient: TernaryElementFunction {
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ p: Float) -> Float { g * p * Foundation.pow(x, p - 1) }
    }
    /// d/dp of base^p: (g, base, y).
    struct PowerExponentGradient: TernaryElementFunction {
        @inline(__always) func callAsFunction(_ g: Float, _ x: Float, _ y: Float) -> Float { g * y * Foundation.log(x) }
    }
}

/// Vectorisable transcendental functions: branch-free polynomials with exponent bit tricks, so
/// loops over them compile to SIMD (libm's `expf` is a scalar call, ≈ 0.3 G elements/s here).
public enum FastMath {
    /// eˣ with max relative error ≈ 2 ulp over the Float range; 0 below −87.3, ∞ above 88.7.
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        // e^x = 2^n · e^r, n = round(x·log2 e), r = x − n·ln2 in [−ln2/2, ln2/2].
        let clamped = x.isNaN ? 0 : Swift.min(Swift.max(x, -87.33654), 88.72283)
        // Round to nearest with the 1.5·2²³ trick: plain adds vectorise, `rounded()` is a libm call
        // on the SSE2 baseline and blocks vectorisation of the whole loop.
        let magic: Float = 12_582_912
        let n = (clamped * 1.44269504088896341 + magic) - magic
        // Fused multiply-adds (one rounding each, and on x86-64 the build targets FMA hardware): the
        // polynomial is most of the work of SiLU, GELU and softmax.
        let r = clamped.addingProduct(n, -0.693145751953125).addingProduct(n, -1.42860682030941723212e-6)
        // Degree-7 Taylor polynomial: truncation error < 6e-9 on the reduced range.
        var p: Float = 1.0 / 5040
        p = Float(1.0 / 720).addingProduct(p, r)
        p = Float(1.0 / 120).addingProduct(p, r)
        p = Float(1.0 / 24).addingProduct(p, r)
        p = Float(1.0 / 6).addingProduct(p, r)
        p = Float(0.5).addingProduct(p, r)
        p = Float(1).addingProduct(p, r)
        p = Float(1).addingProduct(p, r)
        // 2^n through the exponent bits; n ∈ [−126, 128]: split to stay in range.
        let half = Int32(n) >> 1
        let scale1 = Float(bitPattern: UInt32(bitPattern: (half + 127) << 23))
        let scale2 = Float(bitPattern: UInt32(bitPattern: (Int32(n) - half + 127) << 23))
        let result = p * scale1 * scale2
        return x.isNaN ? x : (x < -87.33654 ? 0 : (x > 88.72283 ? .infinity : result))
    }

    @inline(__always)
    public static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// 1 + erf(x), absolute error ≤ 1.5e-7 (Abramowitz & Stegun 7.1.26, the approximation PyTorch's
    /// vectorised CPU `erf` uses). Computed as erfc(−x) for negative x, so GELU's tail keeps its
    /// relative accuracy instead of cancelling against 1; libm's `erff` is a scalar call that kept
    /// GELU loops from vectorising (≈ 10% of a BERT-sized training step).
    @inline(__always)
    public static func onePlusErf(_ x: Float) -> Float {
        let a = Swift.abs(x)
        let t = 1 / (1 + 0.3275911 * a)
        let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        let tail = poly * exp(-a * a)
        return x < 0 ? tail : 2 - tail
    }

    /// erf(x), absolute error ≤ 1.5e-7 (see ``onePlusErf(_:)``).
    @inline(__always)
    public static func erf(_ x: Float) -> Float { onePlusErf(x) - 1 }

    /// tanh through e^(2x): accurate to a few ulp; exact ±1 saturation beyond |x| > 9.
    @inline(__always)
    public static func tanh(_ x: Float) -> Float {
        let a = Swift.min(Swift.abs(x), 9)
        let small = a < 0.25
        // For small |x| the exp form cancels: use the odd series there (error < 1e-8 below 0.25).
        let x2 = a * a
        let series = a * (1 + x2 * (-1.0 / 3 + x2 * (2.0 / 15 + x2 * (-17.0 / 315 + x2 * (62.0 / 2835)))))
        let e = exp(2 * a)
        let viaExp = (e - 1) / (e + 1)
        let magnitude = small ? series : viaExp
        return x.isNaN ? x : (x < 0 ? -magnitude : magnitude)
    }
}
