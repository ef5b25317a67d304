import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// The fields of a Hugging Face `config.json` (`model_type: bert`) that `BertModel` reads.
public struct BertConfig: Sendable, Equatable {
    public var vocabularySize: Int
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    public var maxPositions: Int
    public var typeVocabularySize: Int
    public var layerNormEpsilon: Float
    public var hiddenDropout: Float
    /// Dropout on attention probabilities: read but not applied (the fused attention kernel has none).
    public var attentionDropout: Float

    public init(vocabularySize: Int, hiddenSize: Int, layers: Int, heads: Int, intermediateSize: Int, maxPositions: Int = 512,
                typeVocabularySize: Int = 2, layerNormEpsilon: Float = 1e-12, hiddenDropout: Float = 0.1, attentionDropout: Float = 0.1) {
        (self.vocabularySize, self.hiddenSize, self.layers, self.heads, self.intermediateSize) = (vocabularySize, hiddenSize, layers, heads, intermediateSize)
        (self.maxPositions, self.typeVocabularySize, self.layerNormEpsilon) = (maxPositions, typeVocabularySize, layerNormEpsilon)
        (self.hiddenDropout, self.attentionDropout) = (hiddenDropout, attentionDropout)
    }

    /// Parses `config.json`; a value Permafrost does not implement is an error naming the field.
    public init(json data: Data) throws(ModelConfigError) {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw .notAnObject }
        func integer(_ key: String, default value: Int? = nil) throws(ModelConfigError) -> Int {
            guard let raw = object[key] else {
                guard let value else { throw .missingField(key) }
                return value
            }
            guard let number = raw as? Int, number > 0 else { throw .invalidField(name: key, reason: "must be a positive integer, got \(raw)") }
            return number
        }
        func number(_ key: String, default value: Float) throws(ModelConfigError) -> Float {
            guard let raw = object[key] else { return value }
            guard let number = (raw as? NSNumber)?.floatValue, number >= 0 else { throw .invalidField(name: key, reason: "must be a non-negative number, got \(raw)") }
            return number
        }
        if let type = object["model_type"] as? String, type != "bert" { throw .unsupported(name: "model_type", value: type, supported: "bert") }
        if let act = object["hidden_act"] as? String, act != "gelu" { throw .unsupported(name: "hidden_act", value: act, supported: "gelu") }
        if let position = object["position_embedding_type"] as? String, position != "absolute" {
            throw .unsupported(name: "position_embedding_type", value: position, supported: "absolute")
        }
        if let decoder = object["is_decoder"] as? Bool, decoder { throw .unsupported(name: "is_decoder", value: "true", supported: "false") }
        self.init(vocabularySize: try integer("vocab_size"), hiddenSize: try integer("hidden_size"), layers: try integer("num_hidden_layers"),
                  heads: try integer("num_attention_heads"), intermediateSize: try integer("intermediate_size"),
                  maxPositions: try integer("max_position_embeddings", default: 512), typeVocabularySize: try integer("type_vocab_size", default: 2),
                  layerNormEpsilon: try number("layer_norm_eps", default: 1e-12), hiddenDropout: try number("hidden_dropout_prob", default: 0.1),
                  attentionDropout: try number("attention_probs_dropout_prob", default: 0.1))
        guard hiddenSize % heads == 0 else { throw .invalidField(name: "num_attention_heads", reason: "\(heads) heads do not divide hidden_size \(hiddenSize)") }
    }
}

/// A holder of one Linear named `dense` (BERT's intermediate, output and pooler blocks).
final class DenseHolder: Module {
    let dense: Linear
    let layerNorm: LayerNorm?
    init(_ inputs: Int, _ outputs: Int, layerNorm epsilon: Float?, generator: inout PhiloxGenerator) {
        dense = Linear(inputs, outputs, generator: &generator)
        layerNorm = epsilon.map { LayerNorm([outputs], epsilon: $0) }
        super.init()
        register("dense", dense)
        if let layerNorm { register("LayerNorm", layerNorm) }
    }
}

final class BertSelfAttention: Module {
    let query: Linear, key: Linear, value: Linear
    init(_ config: BertConfig, generator: inout PhiloxGenerator) {
        query = Linear(config.hiddenSize, config.hiddenSize, generator: &generator)
        key = Linear(config.hiddenSize, config.hiddenSize, generator: &generator)
        value = Linear(config.hiddenSize, config.hiddenSize, generator: &generator)
        super.init()
        register("query", query)
        register("key", key)
        register("value", value)
    }
}

final class BertAttention: Module {
    let attention: BertSelfAttention
    let output: DenseHolder
    init(_ config: BertConfig, generator: inout PhiloxGenerator) {
        attention = BertSelfAttention(config, generator: &generator)
        output = DenseHolder(config.hiddenSize, config.hiddenSize, layerNorm: config.layerNormEpsilon, generator: &generator)
        super.init()
        register("self", attention)
        register("output", output)
    }
}

final class BertLayer: Module {
    let attention: BertAttention
    let intermediate: DenseHolder
    let output: DenseHolder
    let dropout: Dropout
    let heads: Int

    init(_ config: BertConfig, generator: inout PhiloxGenerator) {
        attention = BertAttention(config, generator: &generator)
        intermediate = DenseHolder(config.hiddenSize, config.intermediateSize, layerNorm: nil, generator: &generator)
        output = DenseHolder(config.intermediateSize, config.hiddenSize, layerNorm: config.layerNormEpsilon, generator: &generator)
        dropout = Dropout(config.hiddenDropout, seed: UInt64(generator.nextUInt32()))
        heads = config.heads
        super.init()
        register("attention", attention)
        register("intermediate", intermediate)
        register("output", output)
        register("dropout", dropout)  // no tensors; registered so that setTraining(false) turns it off
    }

    /// `[B, S, H]` → `[B, S, H]`; `mask` is additive, `[B, 1, 1, S]`.
    func callAsFunction(_ x: Tensor, mask: Tensor?) -> Tensor {
        let (b, s, h) = (x.shape[0], x.shape[1], x.shape[2]), d = h / heads
        func split(_ t: Tensor) -> Tensor { t.reshaped([b, s, heads, d]).permuted([0, 2, 1, 3]) }
        let a = attention.attention
        let context = scaledDotProductAttention(query: split(a.query(x)), key: split(a.key(x)), value: split(a.value(x)),
                                                mask: mask.map { .additive($0) })
        let merged = context.permuted([0, 2, 1, 3]).reshaped([b, s, h])
        let attended = attention.output.layerNorm!(dropout(attention.output.dense(merged)) + x)
        let expanded = intermediate.dense(attended).gelu()
        return output.layerNorm!(dropout(output.dense(expanded)) + attended)
    }
}

final class BertEmbeddings: Module {
    let words: Embedding, positions: Embedding, tokenTypes: Embedding
    let layerNorm: LayerNorm
    let dropout: Dropout
    init(_ config: BertConfig, generator: inout PhiloxGenerator) {
        words = Embedding(config.vocabularySize, config.hiddenSize, generator: &generator)
        positions = Embedding(config.maxPositions, config.hiddenSize, generator: &generator)
        tokenTypes = Embedding(config.typeVocabularySize, config.hiddenSize, generator: &generator)
        layerNorm = LayerNorm([config.hiddenSize], epsilon: config.layerNormEpsilon)
        dropout = Dropout(config.hiddenDropout, seed: UInt64(generator.nextUInt32()))
        super.init()
        register("word_embeddings", words)
        register("position_embeddings", positions)
        register("token_type_embeddings", tokenTypes)
        register("LayerNorm", layerNorm)
        register("dropout", dropout)
    }
}

final class BertEncoder: Module {
    let layers: ModuleList<BertLayer>
    init(_ config: BertConfig, generator: inout PhiloxGenerator) {
        layers = ModuleList((0..<config.layers).map { _ in BertLayer(config, generator: &generator) })
        super.init()
        register("layer", layers)
    }
}

/// One batch of token ids for ``BertModel``: row-major `[batch, length]` ids, token types and an
/// attention mask (1 = a real token, 0 = padding).
public struct TokenBatch: Sendable {
    public var inputIDs: [Int], tokenTypeIDs: [Int], attentionMask: [Int]
    public var batch: Int, length: Int

    public init(inputIDs: [Int], tokenTypeIDs: [Int]? = nil, attentionMask: [Int]? = nil, batch: Int, length: Int) {
        precondition(inputIDs.count == batch * length, "\(inputIDs.count) ids for a \(batch)×\(length) batch")
        self.inputIDs = inputIDs
        self.tokenTypeIDs = tokenTypeIDs ?? [Int](repeating: 0, count: inputIDs.count)
        self.attentionMask = attentionMask ?? [Int](repeating: 1, count: inputIDs.count)
        (self.batch, self.length) = (batch, length)
    }

    /// Encodings of one length (pad them first) stacked into a batch.
    public init(_ encodings: [WordPieceTokenizer.Encoding]) {
        let length = encodings.map(\.inputIDs.count).max() ?? 0
        precondition(encodings.allSatisfy { $0.inputIDs.count == length }, "encodings must share one length (pad them)")
        self.init(inputIDs: encodings.flatMap(\.inputIDs), tokenTypeIDs: encodings.flatMap(\.tokenTypeIDs),
                  attentionMask: encodings.flatMap(\.attentionMask), batch: encodings.count, length: length)
    }
}

/// Hugging Face's `BertModel` (post-norm encoder with absolute positions and token types, exact GELU,
/// a tanh pooler over `[CLS]`) with its state-dict names unchanged (`embeddings.word_embeddings.weight`,
/// `encoder.layer.0.attention.self.query.weight`, `pooler.dense.weight`), so `model.safetensors` of a
/// BERT checkpoint such as all-MiniLM-L6-v2 loads as it is.
public final class BertModel: Module {
    public let config: BertConfig
    let embeddings: BertEmbeddings
    let encoder: BertEncoder
    let pooler: DenseHolder

    public init(config: BertConfig, seed: UInt64 = 0) {
        self.config = config
        var g = PhiloxGenerator(seed: seed)
        embeddings = BertEmbeddings(config, generator: &g)
        encoder = BertEncoder(config, generator: &g)
        pooler = DenseHolder(config.hiddenSize, config.hiddenSize, layerNorm: nil, generator: &g)
        super.init()
        register("embeddings", embeddings)
        register("encoder", encoder)
        register("pooler", pooler)
    }

    /// A model folder: `config.json` and `model.safetensors` (HF names; a `bert.` prefix is accepted).
    public convenience init(directory: URL) throws {
        let config = try BertConfig(json: Data(contentsOf: directory.appendingPathComponent("config.json")))
        self.init(config: config)
        try loadCheckpoint(directory.appendingPathComponent("model.safetensors"))
    }

    /// The last hidden states `[B, S, H]` and the pooled `[CLS]` output `[B, H]`.
    public func callAsFunction(_ tokens: TokenBatch) -> (hidden: Tensor, pooled: Tensor) {
        precondition(tokens.length <= config.maxPositions, "\(tokens.length) tokens; the model has \(config.maxPositions) positions")
        let (b, s) = (tokens.batch, tokens.length)
        var h = embeddings.words(tokens.inputIDs, shape: [b, s]) + embeddings.positions(Array(0..<s), shape: [1, s])
            + embeddings.tokenTypes(tokens.tokenTypeIDs, shape: [b, s])
        h = embeddings.dropout(embeddings.layerNorm(h))
        // Padding gets the most negative float added to its scores, as transformers does.
        let mask = tokens.attentionMask.contains(0)
            ? Tensor(shape: [b, 1, 1, s], scalars: tokens.attentionMask.map { $0 == 0 ? -Float.greatestFiniteMagnitude : 0 }) : nil
        for layer in encoder.layers.modules { h = layer(h, mask: mask) }
        let first = h.split(sizes: [1, s - 1], alongAxis: 1)[0].reshaped([b, config.hiddenSize])
        return (h, pooler.dense(first).tanh())
    }

    /// The mean of the hidden states over real tokens (sentence-transformers' pooling), `[B, H]`.
    public func meanPooled(_ tokens: TokenBatch) -> Tensor {
        let hidden = self(tokens).hidden
        let mask = Tensor(shape: [tokens.batch, tokens.length, 1], scalars: tokens.attentionMask.map(Float.init))
        let counts = Tensor(shape: [tokens.batch, 1], scalars: (0..<tokens.batch).map { row in
            Float(max(1, tokens.attentionMask[(row * tokens.length)..<((row + 1) * tokens.length)].reduce(0, +)))
        })
        return (hidden * mask).sum(alongAxes: [1]) / counts
    }

    func loadCheckpoint(_ url: URL) throws {
        let names = Set(namedParameters().map(\.name))
        let file = try SafetensorsFile(contentsOf: url)
        var loaded = Set<String>()
        for name in file.names {
            let local = name.hasPrefix("bert.") ? String(name.dropFirst(5)) : name
            // Checkpoints may carry buffers (position_ids) and heads this model does not have.
            guard names.contains(local), let parameter = parameter(named: local) else { continue }
            let tensor = try file.tensor(named: name)
            guard tensor.shape == parameter.shape else {
                throw ModelConfigError.invalidField(name: name, reason: "shape \(tensor.shape) in the checkpoint, \(parameter.shape) in the config")
            }
            parameter.value = tensor
            loaded.insert(local)
        }
        let missing = names.subtracting(loaded).sorted()
        guard missing.isEmpty else { throw ModelConfigError.invalidField(name: "model.safetensors", reason: "missing tensors: \(missing.prefix(5).joined(separator: ", "))") }
    }
}

/// `BertForSequenceClassification`: a ``BertModel`` (`bert.*`), dropout, and a Linear `classifier`
/// over the pooled `[CLS]` output — or over the mean of the hidden states (sentence-transformers'
/// pooling) with `pooling: .mean`.
public final class BertClassifier: Module {
    public enum Pooling: String, Sendable { case cls, mean }
    public let bert: BertModel
    let classifier: Linear
    let dropout: Dropout
    public let pooling: Pooling

    public init(config: BertConfig, classes: Int, pooling: Pooling = .cls, seed: UInt64 = 0) {
        bert = BertModel(config: config, seed: seed)
        var g = PhiloxGenerator(seed: seed &+ 1)
        classifier = Linear(config.hiddenSize, classes, generator: &g)
        dropout = Dropout(config.hiddenDropout, seed: seed &+ 2)
        self.pooling = pooling
        super.init()
        register("bert", bert)
        register("classifier", classifier)
        register("dropout", dropout)
    }

    /// A pretrained `BertModel` folder with a fresh classification head.
    public convenience init(directory: URL, classes: Int, pooling: Pooling = .mean, seed: UInt64 = 0) throws {
        let config = try BertConfig(json: Data(contentsOf: directory.appendingPathComponent("config.json")))
        self.init(config: config, classes: classes, pooling: pooling, seed: seed)
        try bert.loadCheckpoint(directory.appendingPathComponent("model.safetensors"))
    }

    /// Logits `[B, classes]`.
    public func logits(_ tokens: TokenBatch) -> Tensor {
        let features = pooling == .cls ? bert(tokens).pooled : bert.meanPooled(tokens)
        return classifier(dropout(features))
    }
}
