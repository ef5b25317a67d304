import PermafrostNN
import PermafrostTensor

/// FedSVD's server step ("FedSVD: Adaptive Orthogonalization for Private Federated Learning with
/// LoRA"): clients train only B with A frozen; the server averages the B matrices, forms B̄·A with
/// the A the clients used, and refactorises it by SVD into a new A with orthonormal rows (the top
/// right singular vectors) and B = U·Σ, so that B·A is unchanged and the next round's A adapts to
/// what the clients learnt.
public enum FedSVD {
    /// The refactorisation of `b` (`[out, r]`) times `a` (`[r, in]`): a new pair with b′·a′ = b·a
    /// and the rows of a′ orthonormal. Convolution adapters' factors are flattened to matrices and
    /// reshaped back.
    public static func refactorize(b: Tensor, a: Tensor) throws -> (b: Tensor, a: Tensor) {
        let rank = a.shape[0], out = b.shape[0], inputs = a.count / rank
        let bValues = b.scalars.map(Double.init), aValues = a.scalars.map(Double.init)
        var product = [Double](repeating: 0, count: out * inputs)
        for i in 0..<out {
            for k in 0..<rank {
                let bik = bValues[i * rank + k]
                if bik == 0 { continue }
                for j in 0..<inputs { product[i * inputs + j] += bik * aValues[k * inputs + j] }
            }
        }
        let (u, s, vt) = try thinSVD(product, rows: out, columns: inputs)
        let k = min(out, inputs)
        var newB = [Float](repeating: 0, count: out * rank), newA = [Float](repeating: 0, count: rank * inputs)
        for i in 0..<out { for c in 0..<min(rank, k) { newB[i * rank + c] = Float(u[i * k + c] * s[c]) } }
        for c in 0..<min(rank, k) { for j in 0..<inputs { newA[c * inputs + j] = Float(vt[c * inputs + j]) } }
        return (Tensor(shape: b.shape, scalars: newB), Tensor(shape: a.shape, scalars: newA))
    }
}
