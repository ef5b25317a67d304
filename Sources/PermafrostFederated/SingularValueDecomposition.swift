#if canImport(Accelerate)
import Accelerate
#elseif canImport(CBLAS)
import CBLAS
#endif
import Foundation

/// Why a LAPACK routine failed.
public struct LinearAlgebraFailure: Error, CustomStringConvertible {
    public var routine: String
    public var info: Int32
    public var description: String { "LAPACK \(routine) failed (info \(info))" }
}

/// The thin SVD M = U·diag(S)·Vᵀ of a row-major `rows × columns` matrix through LAPACK's `dgesdd`
/// (OpenBLAS; Accelerate on macOS): U is `rows × k`, S has k values in descending order, Vᵀ is
/// `k × columns` (all row-major), k = min(rows, columns).
public func thinSVD(_ matrix: [Double], rows: Int, columns: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
    precondition(matrix.count == rows * columns, "thinSVD: \(matrix.count) entries for a \(rows)×\(columns) matrix")
    // Row-major M is column-major Mᵀ (columns × rows). With Mᵀ = U'·S·V'ᵀ, M = V'·S·U'ᵀ, and LAPACK's
    // column-major outputs read as row-major are exactly M's factors: its Vᵀ buffer is M's U, its U is M's Vᵀ.
    let k = min(rows, columns)
    var a = matrix, s = [Double](repeating: 0, count: k)
    var u = [Double](repeating: 0, count: columns * k), vt = [Double](repeating: 0, count: k * rows)
    var jobz = Int8(UInt8(ascii: "S"))
    var m = Int32(columns), n = Int32(rows), lda = Int32(columns), ldu = Int32(columns), ldvt = Int32(k), info: Int32 = 0
    var lwork: Int32 = -1, query = [Double](repeating: 0, count: 1)
    var iwork = [Int32](repeating: 0, count: 8 * k)
    func call(_ work: inout [Double]) {
        #if canImport(Accelerate)
        dgesdd_(&jobz, &m, &n, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &work, &lwork, &iwork, &info)
        #else
        dgesdd_(&jobz, &m, &n, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &work, &lwork, &iwork, &info, 1)
        #endif
    }
    call(&query)
    guard info == 0 else { throw LinearAlgebraFailure(routine: "dgesdd", info: info) }
    lwork = Int32(query[0])
    var work = [Double](repeating: 0, count: Int(lwork))
    call(&work)
    guard info == 0 else { throw LinearAlgebraFailure(routine: "dgesdd", info: info) }
    return (vt, s, u)
}
