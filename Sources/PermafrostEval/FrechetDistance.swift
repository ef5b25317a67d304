#if canImport(Accelerate)
import Accelerate
#elseif canImport(CBLAS)
import CBLAS
#endif
import Foundation

/// Gaussian statistics (mean and covariance) of feature vectors, in Double.
public struct FeatureStatistics: Sendable {
    public var mean: [Double]
    /// Row-major `d×d`, unbiased (n − 1).
    public var covariance: [Double]
    public var dimension: Int { mean.count }

    public init(rows: [[Double]]) {
        precondition(rows.count >= 2, "feature statistics need at least 2 samples, got \(rows.count)")
        let d = rows[0].count
        var mean = [Double](repeating: 0, count: d)
        for row in rows { for j in 0..<d { mean[j] += row[j] } }
        for j in 0..<d { mean[j] /= Double(rows.count) }
        var covariance = [Double](repeating: 0, count: d * d)
        for row in rows {
            for i in 0..<d {
                let a = row[i] - mean[i]
                for j in i..<d { covariance[i * d + j] += a * (row[j] - mean[j]) }
            }
        }
        for i in 0..<d {
            for j in i..<d {
                covariance[i * d + j] /= Double(rows.count - 1)
                covariance[j * d + i] = covariance[i * d + j]
            }
        }
        self.mean = mean
        self.covariance = covariance
    }
}

public enum LinearAlgebraError: Error, CustomStringConvertible {
    case eigendecompositionFailed(info: Int32)
    public var description: String { "LAPACK dsyevd failed (info \({ if case let .eigendecompositionFailed(i) = self { return i }; return 0 }()))" }
}

/// Eigenvalues and eigenvectors (columns of the row-major result's transpose) of a symmetric matrix,
/// through LAPACK's `dsyevd` from OpenBLAS.
public func symmetricEigen(_ matrix: [Double], dimension n: Int) throws -> (values: [Double], vectors: [Double]) {
    precondition(matrix.count == n * n, "symmetricEigen: \(matrix.count) entries for a \(n)×\(n) matrix")
    var a = matrix // symmetric: row-major equals column-major
    var w = [Double](repeating: 0, count: n)
    var jobz = Int8(UInt8(ascii: "V")), uplo = Int8(UInt8(ascii: "U"))
    var size = Int32(n), lda = Int32(n), info: Int32 = 0
    var lwork: Int32 = -1, liwork: Int32 = -1
    var workQuery = [Double](repeating: 0, count: 1), iworkQuery = [Int32](repeating: 0, count: 1)
    dsyevd_(&jobz, &uplo, &size, &a, &lda, &w, &workQuery, &lwork, &iworkQuery, &liwork, &info, 1, 1)
    guard info == 0 else { throw LinearAlgebraError.eigendecompositionFailed(info: info) }
    lwork = Int32(workQuery[0]); liwork = iworkQuery[0]
    var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
    dsyevd_(&jobz, &uplo, &size, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info, 1, 1)
    guard info == 0 else { throw LinearAlgebraError.eigendecompositionFailed(info: info) }
    // LAPACK wrote eigenvectors as columns (column-major): a[k·n + i] is component i of vector k.
    return (w, a)
}

/// The Fréchet distance between two Gaussians:
/// ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁Σ₂)^½).
///
/// Tr((Σ₁Σ₂)^½) is computed as Tr((A Σ₂ A)^½) with A = Σ₁^½ (both symmetric, so two symmetric
/// eigendecompositions replace a general matrix square root; negative round-off eigenvalues are
/// clamped to zero).
public func frechetDistance(_ a: FeatureStatistics, _ b: FeatureStatistics) throws -> Double {
    precondition(a.dimension == b.dimension, "FID: feature dimensions differ (\(a.dimension) vs \(b.dimension))")
    let n = a.dimension
    let meanTerm = zip(a.mean, b.mean).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
    let traceA = (0..<n).reduce(0) { $0 + a.covariance[$1 * n + $1] }
    let traceB = (0..<n).reduce(0) { $0 + b.covariance[$1 * n + $1] }
    // A = V diag(√λ) Vᵀ
    let (values, vectors) = try symmetricEigen(a.covariance, dimension: n)
    var root = [Double](repeating: 0, count: n * n)
    for k in 0..<n {
        let s = Swift.max(values[k], 0).squareRoot()
        guard s > 0 else { continue }
        for i in 0..<n {
            let vi = vectors[k * n + i] * s
            for j in 0..<n { root[i * n + j] += vi * vectors[k * n + j] }
        }
    }
    // M = A Σ₂ A
    var temporary = [Double](repeating: 0, count: n * n), product = [Double](repeating: 0, count: n * n)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, root, Int32(n), b.covariance, Int32(n), 0, &temporary, Int32(n))
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, temporary, Int32(n), root, Int32(n), 0, &product, Int32(n))
    for i in 0..<n { for j in (i + 1)..<n { let s = (product[i * n + j] + product[j * n + i]) / 2; product[i * n + j] = s; product[j * n + i] = s } }
    let traceRoot = try symmetricEigen(product, dimension: n).values.reduce(0) { $0 + Swift.max($1, 0).squareRoot() }
    return Swift.max(0, meanTerm + traceA + traceB - 2 * traceRoot)
}
