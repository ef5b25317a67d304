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
        // BLAS runs single-threaded; the engine splits large products across its own pool. OpenBLAS's
        // threads spin for ~0.1 s after each call and starve any other thread on a 2-core machine, so
        // one pool for everything is much faster than two pools fighting (their pool is stopped:
        // ``OpenBLASServerThreads``).
        let threads = Parallel.threadCount
        if threads > 1 && m * n * k >= 1 << 21 && max(m, n) >= 2 * threads * 16 {
            let splitRows = m > n
            let extent = splitRows ? m : n
            // Blocks of whole 16-element panels keep BLAS's micro-kernels full.
            let block = ((extent + threads - 1) / threads + 15) / 16 * 16
            let parts = (extent + block - 1) / block
            let pa = SendablePointer(UnsafeMutablePointer(mutating: a)), pb = SendablePointer(UnsafeMutablePointer(mutating: b))
            let pc = SendablePointer(c)
            Parallel.run(parts) { part in
                let start = part * block, size = min(block, extent - start)
                if splitRows {
                    let aBlock = transposeA ? pa.base + start : pa.base + start * lda
                    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                                Int32(size), Int32(n), Int32(k), alpha, aBlock, Int32(lda), pb.base, Int32(ldb), beta, pc.base + start * ldc, Int32(ldc))
                } else {
                    let bBlock = transposeB ? pb.base + start * ldb : pb.base + start
                    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                                Int32(m), Int32(size), Int32(k), alpha, pa.base, Int32(lda), bBlock, Int32(ldb), beta, pc.base + start, Int32(ldc))
                }
            }
            return
        }
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
