import Foundation
import PermafrostNN
import PermafrostTensor

/// A Hugging Face PEFT LoRA adapter folder: `adapter_config.json` and `adapter_model.safetensors`,
/// as `peft`'s `save_pretrained` writes them and `PeftModel.from_pretrained` reads them.
///
/// Tensor names in the file are PEFT's: `base_model.model.<module>.lora_A.weight`, with an attention
/// module's out-projection under `<attention>.base_layer.out_proj.…`; in memory they are the model's
/// own (`<module>.lora_A.weight`, `<attention>.out_proj.lora_A.weight`).
///
/// ```swift
/// try PEFTAdapter(model: model, baseModel: "Models/base-0-5").write(to: adapterFolder)
/// let adapter = try PEFTAdapter(directory: adapterFolder)
/// try adapter.attach(to: freshModel)          // same outputs as `peft` with this folder
/// ```
public struct PEFTAdapter {
    public static let configurationFileName = "adapter_config.json"
    public static let weightsFileName = "adapter_model.safetensors"
    static let prefix = "base_model.model."

    public var configuration: LoRAConfiguration
    /// `target_modules` as saved: module names, or one regular expression PEFT matches in full.
    public var targetModules: TargetModules
    /// `base_model_name_or_path`.
    public var baseModel: String?
    /// The adapter tensors by their name in the model (`<module>.lora_A.weight`).
    public var tensors: [String: Tensor]

    public enum TargetModules: Equatable, Sendable {
        case names([String])
        case regularExpression(String)
    }

    /// The adapters attached to `model` (all of one configuration, as one PEFT adapter has).
    public init(model: Module, baseModel: String? = nil) throws(LoRAError) {
        let adapters = model.lowRankAdapters()
        guard let first = adapters.first else { throw .malformedAdapter("the model has no adapters to save") }
        guard adapters.allSatisfy({ $0.adapter.configuration == first.adapter.configuration }) else {
            throw .malformedAdapter("the model's adapters differ in rank, alpha or dropout; a PEFT adapter folder holds one configuration")
        }
        configuration = first.adapter.configuration
        let attentions = Set(model.namedModules().filter { $0.module is MultiheadAttention }.map(\.name))
        // PEFT lists an attention module, never its out_proj (adapted with it).
        targetModules = .names(adapters.map(\.module).filter { name in
            !(name.hasSuffix(".out_proj") && attentions.contains(String(name.dropLast(".out_proj".count))))
        })
        self.baseModel = baseModel
        tensors = Dictionary(uniqueKeysWithValues: model.lowRankAdapterParameters().map { ($0.name, $0.parameter.value) })
    }

    /// Reads a PEFT LoRA adapter folder, refusing anything Permafrost would not reproduce exactly.
    public init(directory: URL) throws(LoRAError) {
        let configURL = directory.appendingPathComponent(Self.configurationFileName)
        let json: [String: Any]
        do {
            let data = try Data(contentsOf: configURL)
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw LoRAError.malformedAdapter("\(Self.configurationFileName) is not a JSON object")
            }
            json = object
        } catch let error as LoRAError { throw error } catch {
            throw .malformedAdapter("cannot read \(configURL.path): \(error.localizedDescription)")
        }
        (configuration, targetModules, baseModel) = try Self.parse(json)

        let file: SafetensorsFile
        do { file = try SafetensorsFile(contentsOf: directory.appendingPathComponent(Self.weightsFileName)) } catch {
            throw .malformedAdapter("\(Self.weightsFileName): \(error.description)")
        }
        var tensors: [String: Tensor] = [:]
        for name in file.names {
            guard name.hasPrefix(Self.prefix), name.hasSuffix(".lora_A.weight") || name.hasSuffix(".lora_B.weight") else {
                throw .malformedAdapter("tensor '\(name)' is not a LoRA tensor (base_model.model.<module>.lora_A.weight or lora_B.weight)")
            }
            let local = String(name.dropFirst(Self.prefix.count)).replacingOccurrences(of: ".base_layer.", with: ".")
            do { tensors[local] = try file.tensor(named: name) } catch { throw .malformedAdapter("tensor '\(name)': \(error.description)") }
        }
        guard !tensors.isEmpty else { throw .malformedAdapter("\(Self.weightsFileName) holds no tensors") }
        self.tensors = tensors
    }

    static func parse(_ json: [String: Any]) throws(LoRAError) -> (LoRAConfiguration, TargetModules, String?) {
        guard let type = json["peft_type"] as? String else { throw .malformedAdapter("adapter_config.json has no peft_type") }
        guard type == "LORA" else { throw .malformedAdapter("peft_type is '\(type)'; only LORA adapters are supported") }
        guard let rank = json["r"] as? Int, rank > 0 else { throw .malformedAdapter("r must be a positive integer, got \(json["r"] ?? "nothing")") }
        guard let alpha = (json["lora_alpha"] as? NSNumber)?.floatValue ?? (json["lora_alpha"] == nil ? Float(8) : nil) else {
            throw .malformedAdapter("lora_alpha must be a number")
        }
        let dropout = (json["lora_dropout"] as? NSNumber)?.floatValue ?? 0
        // Fields whose non-default values change what the adapter computes, and that Permafrost does not implement.
        func isDefault(_ key: String) -> Bool {
            switch json[key] {
            case nil, is NSNull: return true
            case let flag as Bool: return !flag
            case let text as String: return text == "none"
            case let dictionary as [String: Any]: return dictionary.isEmpty
            case let array as [Any]: return array.isEmpty
            default: return false
            }
        }
        for key in ["use_dora", "fan_in_fan_out", "bias", "lora_bias", "modules_to_save", "rank_pattern", "alpha_pattern",
                    "layers_to_transform", "target_parameters", "layer_replication", "exclude_modules", "trainable_token_indices"] where !isDefault(key) {
            throw .malformedAdapter("\(key) = \(json[key]!) is not supported")
        }
        let targets: TargetModules
        switch json["target_modules"] {
        case let names as [String]: targets = .names(names)
        case let expression as String: targets = .regularExpression(expression)
        default: throw .malformedAdapter("target_modules must be a list of module names or a regular expression")
        }
        let configuration = LoRAConfiguration(rank: rank, alpha: alpha, dropout: dropout, rankStabilized: json["use_rslora"] as? Bool ?? false)
        try configuration.validate()
        return (configuration, targets, json["base_model_name_or_path"] as? String)
    }

    /// The adapted module names, from the tensors (each module has `lora_A` and `lora_B`).
    public var modules: [String] {
        Set(tensors.keys.map { String($0.dropLast(".lora_A.weight".count)) }).sorted()
    }

    /// Builds this adapter's layers for `model`, checks every tensor's shape, and attaches them
    /// (freezing the rest of the model); refuses guarded layers as
    /// ``PermafrostNN/Module/attachLowRankAdapters(_:)`` does. Returns the adapted module names.
    @discardableResult
    public func attach(to model: Module) throws(LoRAError) -> [String] {
        let byName = Dictionary(model.namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        let adaptable = model.namedModules().filter { $0.module is any LowRankAdaptable }.map(\.name)
        var generator = PhiloxGenerator(seed: 0)
        var built: [(module: String, adapter: LowRankAdapter)] = []
        for module in modules {
            guard let layer = byName[module] as? any LowRankAdaptable else {
                throw .unknownModule(name: module, closest: closestNames(to: module, among: adaptable))
            }
            let adapter: LowRankAdapter
            do { adapter = try layer.makeAdapter(configuration, generator: &generator) } catch {
                if case let .unsupportedLayer(_, reason) = error { throw .unsupportedLayer(module: module, reason: reason) }
                throw error
            }
            for (suffix, parameter) in [("lora_A.weight", adapter.downWeight), ("lora_B.weight", adapter.upWeight)] {
                let name = module + "." + suffix
                guard let tensor = tensors[name] else { throw .missingTensor(Self.prefix + name) }
                guard tensor.shape == parameter.shape else { throw .shapeMismatch(tensor: name, expected: parameter.shape, actual: tensor.shape) }
                parameter.value = tensor
            }
            built.append((module, adapter))
        }
        try model.attachLowRankAdapters(built)
        return built.map(\.module)
    }

    /// Writes the folder (both files atomically), in PEFT's names and F32.
    public func write(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let items = tensors.keys.sorted().map { name in
            SafetensorsWriter.Item(name: Self.prefix + peftName(name), tensor: tensors[name]!)
        }
        try SafetensorsWriter.write(items, metadata: ["format": "pt"], to: directory.appendingPathComponent(Self.weightsFileName))
        var json: [String: Any] = [
            "peft_type": "LORA", "r": configuration.rank, "lora_alpha": Double(configuration.alpha), "lora_dropout": Double(configuration.dropout),
            "use_rslora": configuration.rankStabilized, "bias": "none", "fan_in_fan_out": false, "use_dora": false, "lora_bias": false,
            "init_lora_weights": true, "inference_mode": true, "modules_to_save": NSNull(), "task_type": NSNull(),
            "rank_pattern": [String: Any](), "alpha_pattern": [String: Any](), "layers_to_transform": NSNull(), "layers_pattern": NSNull(),
            "revision": NSNull(), "base_model_name_or_path": baseModel ?? NSNull(),
        ]
        switch targetModules {
        case let .names(names): json["target_modules"] = names
        case let .regularExpression(expression): json["target_modules"] = expression
        }
        let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(data, to: directory.appendingPathComponent(Self.configurationFileName))
    }

    /// PEFT's name for an in-memory adapter tensor: an attention module's out_proj sits under its base_layer.
    private func peftName(_ name: String) -> String {
        guard case let .names(targets) = targetModules else { return name }
        for target in targets where name.hasPrefix(target + ".out_proj.lora_") {
            return target + ".base_layer" + name.dropFirst(target.count)
        }
        return name
    }
}

extension PEFTAdapter: CustomStringConvertible {
    /// The configuration, the base, the parameter count and every adapted layer with its A and B shapes.
    public var description: String {
        let c = configuration
        var lines = ["LoRA rank \(c.rank), alpha \(c.alpha) (scale \(c.scale)\(c.rankStabilized ? ", rank-stabilised" : "")), dropout \(c.dropout)",
                     "base: \(baseModel ?? "not recorded"); \(tensors.values.reduce(0) { $0 + $1.count }) parameters in \(modules.count) layers"]
        for module in modules {
            lines.append("  \(module)  A \(tensors[module + ".lora_A.weight"]?.shape ?? [])  B \(tensors[module + ".lora_B.weight"]?.shape ?? [])")
        }
        return lines.joined(separator: "\n")
    }
}
