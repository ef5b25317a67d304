import PermafrostNN
import PermafrostTensor

/// `nn.TransformerEncoderLayer(batch_first=True, norm_first=False, activation="gelu")` with PyTorch's
/// parameter names (`self_attn.*`, `linear1`, `linear2`, `norm1`, `norm2`).
public final class TransformerEncoderLayer: Module {
    let attention: MultiheadAttention
    let linear1: Linear, linear2: Linear
    let norm1: LayerNorm, norm2: LayerNorm
    let dropout: Dropout

    public init(dimension: Int, heads: Int, feedForward: Int, dropout: Float = 0, generator: inout PhiloxGenerator) {
        attention = MultiheadAttention(embedDimension: dimension, heads: heads, generator: &generator)
        linear1 = Linear(dimension, feedForward, generator: &generator)
        self.dropout = Dropout(dropout, seed: UInt64(generator.nextUInt32()))
        linear2 = Linear(feedForward, dimension, generator: &generator)
        norm1 = LayerNorm([dimension])
        norm2 = LayerNorm([dimension])
        super.init()
        register("self_attn", attention)
        register("linear1", linear1)
        register("linear2", linear2)
        register("norm1", norm1)
        register("norm2", norm2)
    }

    /// `[B, S, D]` → `[B, S, D]`, post-norm.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let attended = norm1(x + dropout(attention(x)))
        return norm2(attended + dropout(linear2(dropout(linear1(attended).gelu()))))
    }
}

/// A BERT-style encoder classifier: token embedding + learned positions, `layers` post-norm encoder
/// layers, mean pooling, a linear head. Names: `embedding.weight`, `positions.weight`,
/// `layers.N.…`, `head.weight`.
public final class EncoderClassifier: Module {
    let embedding: Embedding, positions: Embedding
    let layers: ModuleList<TransformerEncoderLayer>
    let head: Linear

    public init(vocabulary: Int = 30522, maxLength: Int = 512, dimension: Int = 384, heads: Int = 12, feedForward: Int = 1536,
                layers count: Int = 6, classes: Int = 2, seed: UInt64 = 0) {
        var g = PhiloxGenerator(seed: seed)
        embedding = Embedding(vocabulary, dimension, generator: &g)
        positions = Embedding(maxLength, dimension, generator: &g)
        layers = ModuleList((0..<count).map { _ in TransformerEncoderLayer(dimension: dimension, heads: heads, feedForward: feedForward, generator: &g) })
        head = Linear(dimension, classes, generator: &g)
        super.init()
        register("embedding", embedding)
        register("positions", positions)
        register("layers", layers)
        register("head", head)
    }

    /// Logits `[B, classes]` for token ids `[B, S]` (row-major).
    public func callAsFunction(tokens: [Int], batch: Int, length: Int) -> Tensor {
        var h = embedding(tokens, shape: [batch, length]) + positions(Array(0..<length), shape: [1, length])
        for layer in layers.modules { h = layer(h) }
        return head(h.mean(alongAxes: [1]))
    }
}
