import Foundation

/// Which key positions a query may attend to.
public enum AttentionMask: Sendable {
    /// Added to the scores before softmax (use `-inf` to forbid a position); broadcasts to `[…, L, S]`.
    case additive(Tensor)
    /// 1 where attending is allowed, 0 where not; broadcasts to `[…, L, S]` (PyTorch's boolean mask).
    case keep(Tensor)
    /// Query `i` sees keys `0…i` only.
    case causal
}

/// PyTorch's `scaled_dot_product_attention`: `softmax(q·kᵀ·scale + mask)·v`.
///
/// `query` is `[…, L, E]`, `key` `[…, S, E]`, `value` `[…, S, Ev]`; the result is `[…, L, Ev]`.
/// `scale` defaults to `1/√E`. The `q·kᵀ` product folds the transpose into the GEMM.
public func scaledDotProductAttention(
    query: Tensor, key: Tensor, value: Tensor, mask: AttentionMask? = nil, scale: Float? = nil
) -> Tensor {
    precondition(query.rank >= 2 && key.rank >= 2 && value.rank >= 2,
                 "attention needs [..., L, E] tensors, got query \(query.shape), key \(key.shape), value \(value.shape)")
    precondition(query.shape.last == key.shape.last,
                 "attention query \(query.shape) and key \(key.shape) differ in embedding size")
    precondition(key.shape[key.rank - 2] == value.shape[value.rank - 2],
                 "attention key \(key.shape) and value \(value.shape) differ in sequence length")
    let embedding = query.shape[query.rank - 1]
    var scores = query.matmul(key, transposeOther: true) * (scale ?? 1 / Float(embedding).squareRoot())
    switch mask {
    case .none: break
    case .additive(let bias): scores = scores + bias
    case .keep(let allowed): scores = scores + allowed.mapElements(Element.MaskToAdditive())
    case .causal:
        let l = scores.shape[scores.rank - 2], s = scores.shape[scores.rank - 1]
        let bias = Tensor(shape: [l, s]) { b in
            for i in 0..<l { for j in 0..<s { b[i * s + j] = j <= i ? 0 : -.infinity } }
        }
        scores = scores + bias
    }
    return scores.softmax(alongAxis: -1).matmul(value)
}
