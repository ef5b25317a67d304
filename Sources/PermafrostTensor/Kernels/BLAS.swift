#if canImport(Accelerate)
import Accelerate
#elseif canImport(CBLAS)
import CBLAS
#endif

/// Thin, counted wrapper over `cblas_sgemm` (row-major). Every matrix product in the engine goes
/// through here, so the counters see all of them.
enum BLAS {
    /// `C = alpha·op(A)·op(B) + beta·C` with `op(A)` m×k and `op(B)` k×n, row-major.
    /// `lda`, `ldb`, `ldc` default to the packed leading dimensions.
    @inline(__always)
    static func sgemm(
        transposeA: Bool, transposeB: Bool,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int? = nil,
        b: UnsafePointer<Float>, ldb: Int? = nil,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int? = nil
    ) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            // op(A)·op(B) is zero: only the beta scaling remains (BLAS may skip it).
            let ldc = ldc ?? n
            for row in 0..<m {
                for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : beta * c[row * ldc + column] }
            }
            return
        }
        let lda = lda ?? (transposeA ? m : k)
        let ldb = ldb ?? (transposeB ? k : n)
        let ldc = ldc ?? n
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
