import Foundation

/// Why a diffusers config could not be used.
public enum ModelConfigError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case notAnObject
    case missingField(String)
    case invalidField(name: String, reason: String)
    case unsupported(name: String, value: String, supported: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read config '\(path)': \(reason)"
        case .notAnObject: return "config.json is not a JSON object"
        case let .missingField(name): return "config.json lacks the required field '\(name)'"
        case let .invalidField(name, reason): return "config field '\(name)': \(reason)"
        case let .unsupported(name, value, supported): return "config field '\(name)' = \(value) is not supported (supported: \(supported))"
        }
    }
}

/// The `config.json` of a diffusers `UNet2DModel`, restricted to what Permafrost implements.
/// Fields with unsupported values are refused by name rather than silently ignored.
public struct UNet2DConfig: Equatable, Sendable {
    public var sampleSize: Int?
    public var inChannels: Int = 3
    public var outChannels: Int = 3
    public var blockOutChannels: [Int] = [224, 448, 672, 896]
    public var layersPerBlock: Int = 2
    public var downBlockTypes: [String] = ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    public var upBlockTypes: [String] = ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    public var midBlockType: String? = "UNetMidBlock2D"
    public var normNumGroups: Int = 32
    public var normEpsilon: Float = 1e-5
    public var attentionHeadDim: Int? = 8
    public var numClassEmbeds: Int?
    public var flipSinToCos: Bool = true
    public var freqShift: Int = 0
    public var addAttention: Bool = true
    public var timeEmbeddingDim: Int?
    public var dropout: Float = 0

    public init() {}

    /// The reference class-conditional MNIST UNet (28×28×1, 16 class slots, ≈1.6 M parameters).
    /// A small MNIST UNet for tests and quick runs: channels 16/32, one layer per block, attention at 14×14.
    public static let mnistTiny: UNet2DConfig = {
        var tiny = UNet2DConfig.mnistReference
        tiny.blockOutChannels = [16, 32]
        tiny.layersPerBlock = 1
        tiny.downBlockTypes = ["DownBlock2D", "AttnDownBlock2D"]
        tiny.upBlockTypes = ["AttnUpBlock2D", "UpBlock2D"]
        tiny.normNumGroups = 4
        return tiny
    }()

    public static let mnistReference: UNet2DConfig = {
        var c = UNet2DConfig()
        c.sampleSize = 28
        c.inChannels = 1
        c.outChannels = 1
        c.blockOutChannels = [32, 64, 64]
        c.layersPerBlock = 2
        c.downBlockTypes = ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]
        c.upBlockTypes = ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]
        c.normNumGroups = 8
        c.attentionHeadDim = 8
        c.numClassEmbeds = 16
        return c
    }()

    static let downTypes: Set<String> = ["DownBlock2D", "AttnDownBlock2D"]
    static let upTypes: Set<String> = ["UpBlock2D", "AttnUpBlock2D"]

    /// Parses a diffusers config.json. Keys starting with `_` and keys Permafrost does not know are
    /// ignored; known keys with values it does not implement are errors naming the key.
    public init(json data: Data) throws(ModelConfigError) {
        guard let fields = try? JSONDecoder().decode([String: ConfigValue].self, from: data) else { throw .notAnObject }
        func value(_ key: String) -> ConfigValue? {
            guard let v = fields[key], v != .null else { return nil }
            return v
        }
        func int(_ key: String) throws(ModelConfigError) -> Int? {
            guard let v = value(key) else { return nil }
            switch v {
            case let .integer(n): return n
            case let .number(d) where d == d.rounded() && abs(d) < 1e15: return Int(d)
            default: throw .invalidField(name: key, reason: "expected an integer, got \(v)")
            }
        }
        func string(_ key: String) throws(ModelConfigError) -> String? {
            guard let v = value(key) else { return nil }
            guard case let .string(text) = v else { throw .invalidField(name: key, reason: "expected a string, got \(v)") }
            return text
        }
        func strings(_ key: String) throws(ModelConfigError) -> [String]? {
            guard let v = value(key) else { return nil }
            guard case let .list(items) = v else { throw .invalidField(name: key, reason: "expected a list of strings") }
            var result: [String] = []
            for item in items {
                guard case let .string(text) = item else { throw .invalidField(name: key, reason: "expected a list of strings") }
                result.append(text)
            }
            return result
        }
        func integers(_ key: String) throws(ModelConfigError) -> [Int]? {
            guard let v = value(key) else { return nil }
            guard case let .list(items) = v else { throw .invalidField(name: key, reason: "expected a list of integers") }
            var result: [Int] = []
            for item in items {
                guard case let .integer(n) = item else { throw .invalidField(name: key, reason: "expected a list of integers") }
                result.append(n)
            }
            return result
        }
        func bool(_ key: String) throws(ModelConfigError) -> Bool? {
            guard let v = value(key) else { return nil }
            guard case let .boolean(flag) = v else { throw .invalidField(name: key, reason: "expected true or false, got \(v)") }
            return flag
        }
        func number(_ key: String) throws(ModelConfigError) -> Double? {
            guard let v = value(key) else { return nil }
            switch v {
            case let .integer(n): return Double(n)
            case let .number(d): return d
            default: throw .invalidField(name: key, reason: "expected a number, got \(v)")
            }
        }
        func require<T: Equatable>(_ key: String, _ value: T?, equals expected: T, _ description: String) throws(ModelConfigError) {
            if let value, value != expected { throw .unsupported(name: key, value: "\(value)", supported: description) }
        }

        if let className = try string("_class_name"), className != "UNet2DModel" {
            throw .unsupported(name: "_class_name", value: className, supported: "UNet2DModel")
        }
        if case .list = value("sample_size") {
            let list = try integers("sample_size") ?? []
            guard list.count == 2, list[0] == list[1] else { throw .unsupported(name: "sample_size", value: "\(list)", supported: "a square size") }
            self.sampleSize = list[0]
        } else {
            self.sampleSize = try int("sample_size")
        }
        inChannels = try int("in_channels") ?? inChannels
        outChannels = try int("out_channels") ?? outChannels
        if let list = try integers("block_out_channels") {
            guard !list.isEmpty, list.allSatisfy({ $0 > 0 }) else {
                throw .invalidField(name: "block_out_channels", reason: "expected a non-empty list of positive integers")
            }
            blockOutChannels = list
        }
        layersPerBlock = try int("layers_per_block") ?? layersPerBlock
        downBlockTypes = try strings("down_block_types") ?? downBlockTypes
        upBlockTypes = try strings("up_block_types") ?? upBlockTypes
        if fields.keys.contains("mid_block_type") { midBlockType = try string("mid_block_type") }
        normNumGroups = try int("norm_num_groups") ?? normNumGroups
        normEpsilon = Float(try number("norm_eps") ?? Double(normEpsilon))
        if fields.keys.contains("attention_head_dim") { attentionHeadDim = try int("attention_head_dim") }
        numClassEmbeds = try int("num_class_embeds")
        flipSinToCos = try bool("flip_sin_to_cos") ?? flipSinToCos
        freqShift = try int("freq_shift") ?? freqShift
        addAttention = try bool("add_attention") ?? addAttention
        timeEmbeddingDim = try int("time_embedding_dim")
        dropout = Float(try number("dropout") ?? 0)

        try require("time_embedding_type", try string("time_embedding_type"), equals: "positional", "positional")
        try require("act_fn", try string("act_fn"), equals: "silu", "silu")
        try require("resnet_time_scale_shift", try string("resnet_time_scale_shift"), equals: "default", "default")
        try require("center_input_sample", try bool("center_input_sample"), equals: false, "false")
        try require("downsample_type", try string("downsample_type"), equals: "conv", "conv")
        try require("upsample_type", try string("upsample_type"), equals: "conv", "conv")
        try require("downsample_padding", try int("downsample_padding"), equals: 1, "1")
        try require("mid_block_scale_factor", try number("mid_block_scale_factor"), equals: 1, "1")
        if let value = try string("class_embed_type") { throw .unsupported(name: "class_embed_type", value: value, supported: "null (an embedding table of num_class_embeds rows)") }
        if let value = try int("attn_norm_num_groups") { throw .unsupported(name: "attn_norm_num_groups", value: "\(value)", supported: "null") }
        try validate()
    }

    /// Checks the structural constraints, naming the offending field.
    public func validate() throws(ModelConfigError) {
        for type in downBlockTypes where !Self.downTypes.contains(type) {
            throw .unsupported(name: "down_block_types", value: type, supported: Self.downTypes.sorted().joined(separator: ", "))
        }
        for type in upBlockTypes where !Self.upTypes.contains(type) {
            throw .unsupported(name: "up_block_types", value: type, supported: Self.upTypes.sorted().joined(separator: ", "))
        }
        if let mid = midBlockType, mid != "UNetMidBlock2D" { throw .unsupported(name: "mid_block_type", value: mid, supported: "UNetMidBlock2D or null") }
        guard downBlockTypes.count == blockOutChannels.count, upBlockTypes.count == blockOutChannels.count else {
            throw .invalidField(name: "block_out_channels", reason: "needs one entry per down and up block (\(blockOutChannels.count) vs \(downBlockTypes.count) down, \(upBlockTypes.count) up)")
        }
        guard inChannels > 0, outChannels > 0 else { throw .invalidField(name: "in_channels", reason: "channels must be positive") }
        guard layersPerBlock > 0 else { throw .invalidField(name: "layers_per_block", reason: "must be positive") }
        for channels in blockOutChannels where channels % normNumGroups != 0 {
            throw .invalidField(name: "norm_num_groups", reason: "\(normNumGroups) groups do not divide \(channels) channels")
        }
        if let head = attentionHeadDim {
            for channels in blockOutChannels where channels % head != 0 {
                throw .invalidField(name: "attention_head_dim", reason: "\(head) does not divide \(channels) channels")
            }
        }
        if let size = sampleSize, size % (1 << (blockOutChannels.count - 1)) != 0 {
            throw .invalidField(name: "sample_size", reason: "\(size) is not divisible by 2^\(blockOutChannels.count - 1) (one halving per down block)")
        }
        guard dropout >= 0, dropout < 1 else { throw .invalidField(name: "dropout", reason: "must be in [0, 1)") }
    }

    public var timeEmbedDimension: Int { timeEmbeddingDim ?? blockOutChannels[0] * 4 }

    /// diffusers' `config.json` for this model.
    public func jsonData() -> Data {
        let object: [String: Any] = [
            "_class_name": "UNet2DModel", "_diffusers_version": "0.42.1",
            "sample_size": sampleSize.map { $0 as Any } ?? NSNull(), "in_channels": inChannels, "out_channels": outChannels,
            "center_input_sample": false, "time_embedding_type": "positional", "time_embedding_dim": timeEmbeddingDim.map { $0 as Any } ?? NSNull(),
            "freq_shift": freqShift, "flip_sin_to_cos": flipSinToCos, "down_block_types": downBlockTypes,
            "mid_block_type": midBlockType.map { $0 as Any } ?? NSNull(), "up_block_types": upBlockTypes,
            "block_out_channels": blockOutChannels, "layers_per_block": layersPerBlock, "mid_block_scale_factor": 1,
            "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": Double(dropout),
            "act_fn": "silu", "attention_head_dim": attentionHeadDim.map { $0 as Any } ?? NSNull(),
            "norm_num_groups": normNumGroups, "attn_norm_num_groups": NSNull(), "norm_eps": Double(normEpsilon),
            "resnet_time_scale_shift": "default", "add_attention": addAttention, "class_embed_type": NSNull(),
            "num_class_embeds": numClassEmbeds.map { $0 as Any } ?? NSNull(), "num_train_timesteps": NSNull(),
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
    }
}

/// A JSON value of a config file, decoded without Foundation's number/bool ambiguity.
enum ConfigValue: Decodable, Equatable, CustomStringConvertible {
    case null, boolean(Bool), integer(Int), number(Double), string(String), list([ConfigValue]), object([String: ConfigValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let b = try? container.decode(Bool.self) { self = .boolean(b) }
        else if let i = try? container.decode(Int.self) { self = .integer(i) }
        else if let d = try? container.decode(Double.self) { self = .number(d) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else if let l = try? container.decode([ConfigValue].self) { self = .list(l) }
        else { self = .object(try container.decode([String: ConfigValue].self)) }
    }

    var description: String {
        switch self {
        case .null: return "null"
        case let .boolean(b): return "\(b)"
        case let .integer(i): return "\(i)"
        case let .number(d): return "\(d)"
        case let .string(s): return "\"\(s)\""
        case let .list(l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
        case .object: return "{…}"
        }
    }
}
