import PermafrostTensor

/// `nn.MultiheadAttention(batch_first=True)` with PyTorch's parameter names: `in_proj_weight`
/// `[3E, E]`, `in_proj_bias` `[3E]`, `out_proj.weight`, `out_proj.bias`.
public final class MultiheadAttention: Module {
    public let embedDimension: Int, heads: Int
    public let inProjectionWeight: Parameter
    public let inProjectionBias: Parameter?
    public let outProjection: Linear

    public init(embedDimension: Int, heads: Int, bias: Bool = true, generator: inout PhiloxGenerator) {
        precondition(heads > 0 && embedDimension % heads == 0, "MultiheadAttention: \(heads) heads do not divide dimension \(embedDimension)")
        self.embedDimension = embedDimension
        self.heads = heads
        inProjectionWeight = Parameter(Initializers.xavierUniform([3 * embedDimension, embedDimension], fanIn: embedDimension,
                                                                  fanOut: 3 * embedDimension, generator: &generator))
        inProjectionBias = bias ? Parameter(Tensor.zeros([3 * embedDimension])) : nil
        outProjection = Linear(embedDimension, embedDimension, bias: bias, generator: &generator)
        if let b = outProjection.bias { b.value = Tensor.zeros([embedDimension]) }
        super.init()
        register("in_proj_weight", inProjectionWeight)
        if let inProjectionBias { register("in_proj_bias", inProjectionBias) }
        register("out_proj", outProjection)
    }

    /// The in-projection's low-rank adapter (``LowRankAdaptable``); `out_proj` carries its own.
    public private(set) var adapter: LowRankAdapter?

    /// Attaches `adapter` to the in-projection (nil removes it); `out_proj` is a `Linear` with its own.
    public func attach(_ adapter: LowRankAdapter?) {
        replaceAdapterChildren(old: self.adapter, new: adapter)
        self.adapter = adapter
    }

    /// Self-attention of `x` (`[B, S, E]`): one input projection to a packed `[B, S, 3E]` tensor,
    /// whose heads the attention kernel reads in place (PyTorch's fast path when query, key and value
    /// are the same tensor). Same values and gradients as `callAsFunction(query: x, key: x, value: x)`.
    public func callAsFunction(_ x: Tensor, mask: AttentionMask? = nil) -> Tensor {
        if case .additive(let bias) = mask, bias.requiresGradient { return callAsFunction(query: x, key: x, value: x, mask: mask) }
        let packed = x.linear(weight: effectiveInProjectionWeight, bias: inProjectionBias?.value)
        return outProjection(multiHeadSelfAttention(packed: packed, heads: heads, mask: mask))
    }

    /// Attention of `query` (`[B, L, E]`) over `key`/`value` (`[B, S, E]`).
    public func callAsFunction(query: Tensor, key: Tensor, value: Tensor, mask: AttentionMask? = nil) -> Tensor {
        let e = embedDimension, d = e / heads
        let weights = effectiveInProjectionWeight.split(sizes: [e, e, e], alongAxis: 0)
        let biases = inProjectionBias.map { $0.value.split(sizes: [e, e, e], alongAxis: 0) }
        func project(_ x: Tensor, _ i: Int) -> Tensor {
            return x.linear(weight: weights[i], bias: biases?[i]).reshaped([x.shape[0], x.shape[1], heads, d]).permuted([0, 2, 1, 3])
        }
        let attended = scaledDotProductAttention(query: project(query, 0), key: project(key, 1), value: project(value, 2), mask: mask)
        let merged = attended.permuted([0, 2, 1, 3]).reshaped([query.shape[0], query.shape[1], e])
        return outProjection(merged)
    }
}
