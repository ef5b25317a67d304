import Foundation

/// Small SIMD reductions over contiguous Float runs. Float addition is not associative, so the
/// compiler never vectorises a plain `total += p[i]` loop; eight independent lanes do it by hand.
/// (Plain `*` and `+`: without `-target-cpu`, `addingProduct` compiles to per-lane `fmaf` calls.)
enum VectorMath {
    @inline(__always)
    static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var total = acc.sum()
        while i < n { total += p[i]; i += 1 }
        return total
    }

    /// Σ (p[i] − shift)².
    @inline(__always)
    static func sumOfSquares(_ p: UnsafePointer<Float>, _ n: Int, shift: Float) -> Float {
        var acc = SIMD8<Float>()
        let s = SIMD8<Float>(repeating: shift)
        var i = 0
        while i + 8 <= n {
            let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) - s
            acc += d * d
            i += 8
        }
        var total = acc.sum()
        while i < n { let d = p[i] - shift; total += d * d; i += 1 }
        return total
    }

    /// Σ a[i]·b[i].
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var total = acc.sum()
        while i < n { total += a[i] * b[i]; i += 1 }
        return total
    }

    /// max p[i] (−∞ for an empty run).
    @inline(__always)
    static func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            acc.replace(with: v, where: v .> acc)
            i += 8
        }
        var result = acc.max()
        while i < n { result = Swift.max(result, p[i]); i += 1 }
        return result
    }

    /// Softmax of one contiguous row, in place, stable (max subtracted). A row that is −∞
    /// everywhere becomes NaN, as in PyTorch.
    @inline(__always)
    static func softmaxInPlace(_ row: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = maximum(row, n)
        if m == -.infinity { m = 0 }
        // Separate passes: a map and a reduction each vectorise, a fused loop with a running sum does not.
        for j in 0..<n { row[j] = FastMath.exp(row[j] - m) }
        let scale = 1 / sum(row, n)
        for j in 0..<n { row[j] *= scale }
    }

    /// Log-softmax of the contiguous row `x` into a distinct row `y`.
    @inline(__always)
    static func logSoftmax(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = maximum(x, n)
        if m == -.infinity { m = 0 }
        for j in 0..<n { y[j] = FastMath.exp(x[j] - m) }
        let shift = m + Foundation.log(sum(y, n))
        for j in 0..<n { y[j] = x[j] - shift }
    }

    /// The softmax backward of one row, in place: `g ← y·(g − Σ g·y)·scale`.
    @inline(__always)
    static func softmaxBackwardInPlace(gradient g: UnsafeMutablePointer<Float>, output y: UnsafePointer<Float>, _ n: Int, scale: Float = 1) {
        let d = dot(g, y, n)
        for j in 0..<n { g[j] = y[j] * (g[j] - d) * scale }
    }
}
