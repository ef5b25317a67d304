@testable import PermafrostTensor

/// The largest difference between the engine's `a.matmul(b)` (2-D) and the product summed in
/// Double, over every `rowStride`-th row: an oracle for BLAS set-up changes.
func largestProductError(_ a: Tensor, _ b: Tensor, rowStride: Int = 1) -> Float {
    let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
    let product = a.matmul(b).scalars
    let (x, y) = (a.scalars, b.scalars)
    var worst: Float = 0
    for i in stride(from: 0, to: m, by: rowStride) {
        for j in 0..<n {
            var exact = 0.0
            for p in 0..<k { exact += Double(x[i * k + p]) * Double(y[p * n + j]) }
            worst = max(worst, abs(product[i * n + j] - Float(exact)))
        }
    }
    return worst
}
