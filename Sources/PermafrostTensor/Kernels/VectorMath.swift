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
}
