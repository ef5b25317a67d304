import Crypto
import Foundation
import PermafrostNN
import PermafrostTensor

/// Why a checkpoint could not be loaded or saved. Loading validates everything before it changes
/// any parameter, so a failed load leaves the model as it was.
public enum CheckpointError: Error, Equatable, CustomStringConvertible {
    case file(SafetensorsError)
    case unknownTensor(name: String, closest: [String])
    case missingTensors([String])
    case shapeMismatch(name: String, model: [Int], checkpoint: [Int])
    case notADelta(path: String)
    case baseDigestMismatch(expected: String, actual: String)
    case frozenTensorInDelta(name: String)

    public var description: String {
        switch self {
        case let .file(error): return error.description
        case let .unknownTensor(name, closest):
            return "the checkpoint has tensor '\(name)', which the model lacks" + (closest.isEmpty ? "" : "; closest model names: " + closest.map { "'\($0)'" }.joined(separator: ", "))
        case let .missingTensors(names):
            return "the checkpoint lacks \(names.count) tensor(s) of the model: " + names.prefix(5).map { "'\($0)'" }.joined(separator: ", ") + (names.count > 5 ? ", …" : "")
        case let .shapeMismatch(name, model, checkpoint): return "tensor '\(name)' has shape \(checkpoint) in the checkpoint but \(model) in the model"
        case let .notADelta(path): return "'\(path)' is not a Permafrost delta checkpoint (no permafrost.base_sha256 metadata)"
        case let .baseDigestMismatch(expected, actual): return "the delta was made for a base with SHA-256 \(expected), but this base has \(actual)"
        case let .frozenTensorInDelta(name): return "the delta changes '\(name)', which is frozen in this model"
        }
    }
}

/// SHA-256 of a file's bytes, hex-encoded.
public func sha256Hex(of url: URL) throws(SafetensorsError) -> String {
    let data: Data
    do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch { throw .unreadable(path: url.path, reason: (error as NSError).localizedDescription) }
    return sha256Hex(data)
}

/// SHA-256 of bytes, hex-encoded.
public func sha256Hex<D: DataProtocol>(_ data: D) -> String {
    SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

extension Module {
    /// The model's tensors by name (PyTorch's `state_dict`).
    public func stateDictionary() -> [(name: String, tensor: Tensor)] {
        namedParameters().map { ($0.name, $0.parameter.value) }
    }

    /// Loads every tensor from `file`. With `strict`, the checkpoint must name exactly the model's
    /// tensors; otherwise tensors missing from it keep their values (unknown names are still errors).
    public func load(from file: SafetensorsFile, strict: Bool = true) throws(CheckpointError) {
        let parameters = namedParameters()
        let byName = Dictionary(parameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        var loaded: [(Parameter, Tensor)] = []
        for entry in file.entries {
            guard let parameter = byName[entry.name] else {
                throw .unknownTensor(name: entry.name, closest: closestNames(to: entry.name, among: parameters.map(\.name)))
            }
            guard entry.shape == parameter.shape else { throw .shapeMismatch(name: entry.name, model: parameter.shape, checkpoint: entry.shape) }
            do { loaded.append((parameter, try file.tensor(named: entry.name))) } catch { throw .file(error) }
        }
        if strict {
            let present = Set(file.names)
            let missing = parameters.map(\.name).filter { !present.contains($0) }
            guard missing.isEmpty else { throw .missingTensors(missing) }
        }
        for (parameter, tensor) in loaded { parameter.value = tensor }
    }

    /// Loads a checkpoint file (see ``load(from:strict:)``).
    public func load(contentsOf url: URL, strict: Bool = true) throws(CheckpointError) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(contentsOf: url) } catch { throw .file(error) }
        try load(from: file, strict: strict)
    }

    /// Saves every tensor (atomically) as F32 unless another dtype is asked for.
    public func save(to url: URL, dtype: SafetensorsDType = .f32, metadata: [String: String] = [:]) throws(CheckpointError) {
        do { try SafetensorsWriter.write(stateDictionary(), dtype: dtype, metadata: metadata, to: url) } catch { throw .file(error) }
    }
}

/// Delta checkpoints: only the trainable tensors, tied to their base by the base file's SHA-256.
///
/// Metadata: `permafrost.format = delta-v1`, `permafrost.base_sha256 = <hex>`. Frozen tensors are
/// not stored at all — they are, by construction, the base's.
public enum DeltaCheckpoint {
    public static let formatKey = "permafrost.format"
    public static let baseDigestKey = "permafrost.base_sha256"

    /// Writes the model's trainable tensors to `url`, recording `baseDigest` (the SHA-256 of the base
    /// checkpoint file the model started from).
    public static func save(_ model: Module, baseDigest: String, to url: URL, metadata: [String: String] = [:]) throws(CheckpointError) {
        var fields = metadata
        fields[formatKey] = "delta-v1"
        fields[baseDigestKey] = baseDigest
        let items = model.trainableParameters().map { SafetensorsWriter.Item(name: $0.name, tensor: $0.parameter.value) }
        do { try SafetensorsWriter.write(items, metadata: fields, to: url) } catch { throw .file(error) }
    }

    /// Loads the base checkpoint at `baseURL` into `model`, then the delta at `deltaURL` on top,
    /// refusing a delta whose recorded base digest differs from the base file's, or one that would
    /// change a tensor frozen in `model`.
    public static func load(base baseURL: URL, delta deltaURL: URL, into model: Module) throws(CheckpointError) {
        let delta: SafetensorsFile
        do { delta = try SafetensorsFile(contentsOf: deltaURL) } catch { throw .file(error) }
        guard delta.metadata[formatKey] == "delta-v1", let expected = delta.metadata[baseDigestKey] else {
            throw .notADelta(path: deltaURL.path)
        }
        let actual: String
        do { actual = try sha256Hex(of: baseURL) } catch { throw .file(error) }
        guard actual == expected else { throw .baseDigestMismatch(expected: expected, actual: actual) }
        for name in delta.names {
            if let parameter = model.parameter(named: name), parameter.isFrozen { throw .frozenTensorInDelta(name: name) }
        }
        // Validate the delta against the model before touching anything.
        let scratch = model.namedParameters()
        for entry in delta.entries {
            guard let parameter = scratch.first(where: { $0.name == entry.name })?.parameter else {
                throw .unknownTensor(name: entry.name, closest: closestNames(to: entry.name, among: scratch.map(\.name)))
            }
            guard parameter.shape == entry.shape else { throw .shapeMismatch(name: entry.name, model: parameter.shape, checkpoint: entry.shape) }
            guard entry.dtype.isFloatingPoint else { throw .file(.notFloatingPoint(tensor: entry.name, dtype: entry.dtype.rawValue)) }
        }
        try model.load(contentsOf: baseURL, strict: true)
        try model.load(from: delta, strict: false)
    }
}
