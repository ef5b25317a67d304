import Foundation
import PermafrostNN
import PermafrostTensor

/// A task vector τ = θ_fine-tuned − θ_pretrained per tensor (Ilharco et al., "Editing Models with
/// Task Arithmetic", arXiv 2212.04089): add it to teach a task, subtract it to forget one, add
/// several to merge tasks, scale it to dose it.
///
/// Differences are held in Float64: the difference of two Float32 values is exact there, so adding a
/// vector to the checkpoint it was taken from gives the fine-tuned weights bit for bit, and subtracting
/// it again gives the base back bit for bit. Each application rounds once, from Float64 to Float32.
/// Tensors that did not change (frozen ones) are not part of the vector.
///
/// ```swift
/// let tau = try TaskVector(pretrained: base, fineTuned: tuned)
/// try tau.apply(to: base)              // base now equals tuned, bit for bit
/// try tau.scaled(by: -1).apply(to: base)   // and the base again
/// ```
public struct TaskVector: Sendable, Equatable {
    public static let formatKey = "permafrost.format", format = "task-vector-v1"

    /// Per tensor name: its shape and the Float64 differences.
    public var deltas: [String: (shape: [Int], values: [Double])]

    public static func == (a: TaskVector, b: TaskVector) -> Bool {
        Set(a.deltas.keys) == Set(b.deltas.keys) && a.deltas.allSatisfy { name, entry in b.deltas[name].map { $0.shape == entry.shape && $0.values == entry.values } ?? false }
    }

    /// The names the vector changes, sorted.
    public var names: [String] { deltas.keys.sorted() }

    public init(deltas: [String: (shape: [Int], values: [Double])]) { self.deltas = deltas }

    /// θ_fineTuned − θ_pretrained for every tensor that differs; both models must have the same names and shapes.
    public init(pretrained: Module, fineTuned: Module) throws(TaskVectorError) {
        let before = Dictionary(uniqueKeysWithValues: pretrained.stateDictionary())
        let after = fineTuned.stateDictionary()
        guard Set(before.keys) == Set(after.map(\.name)) else {
            let missing = Set(before.keys).symmetricDifference(after.map(\.name)).sorted()
            throw .mismatchedModels("the models' tensors differ: \(missing.prefix(5).joined(separator: ", "))")
        }
        var deltas: [String: (shape: [Int], values: [Double])] = [:]
        for (name, tuned) in after {
            let base = before[name]!
            guard base.shape == tuned.shape else { throw .shapeMismatch(tensor: name, expected: base.shape, actual: tuned.shape) }
            let values = zip(tuned.scalars, base.scalars).map { Double($0) - Double($1) }
            guard values.allSatisfy(\.isFinite) else { throw .nonFinite(tensor: name) }
            if values.contains(where: { $0 != 0 }) { deltas[name] = (tuned.shape, values) }
        }
        self.deltas = deltas
    }

    /// This vector times `factor`.
    public func scaled(by factor: Double) -> TaskVector {
        TaskVector(deltas: deltas.mapValues { ($0.shape, $0.values.map { $0 * factor }) })
    }

    /// The sum of two vectors (tensors in either; shapes must agree).
    public static func + (a: TaskVector, b: TaskVector) throws(TaskVectorError) -> TaskVector {
        var result = a.deltas
        for (name, entry) in b.deltas {
            if let existing = result[name] {
                guard existing.shape == entry.shape else { throw .shapeMismatch(tensor: name, expected: existing.shape, actual: entry.shape) }
                result[name] = (entry.shape, zip(existing.values, entry.values).map { $0 + $1 })
            } else {
                result[name] = entry
            }
        }
        return TaskVector(deltas: result)
    }

    /// Adds the vector to `model`'s weights (θ ← round(θ + τ)). Refuses, changing nothing, a tensor the
    /// model lacks or shapes differently, and a tensor a publisher's guard freezes.
    public func apply(to model: Module) throws(TaskVectorError) {
        let parameters = Dictionary(model.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        for name in names {
            guard let parameter = parameters[name] else {
                throw .unknownTensor(name: name, closest: closestNames(to: name, among: Array(parameters.keys)))
            }
            guard parameter.shape == deltas[name]!.shape else { throw .shapeMismatch(tensor: name, expected: parameter.shape, actual: deltas[name]!.shape) }
            guard !parameter.isEnforced else { throw .guardedTensor(name) }
        }
        for name in names {
            let parameter = parameters[name]!, delta = deltas[name]!.values
            let updated = zip(parameter.value.scalars, delta).map { Float(Double($0) + $1) }
            parameter.value = Tensor(shape: parameter.shape, scalars: updated)
        }
    }

    /// Writes the vector as a safetensors file of F64 tensors (atomically).
    public func write(to url: URL) throws {
        let items = names.map { name in
            let entry = deltas[name]!
            return SafetensorsWriter.Item(name: name, dtype: .f64, shape: entry.shape,
                                          bytes: entry.values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) } })
        }
        try SafetensorsWriter.write(items, metadata: [Self.formatKey: Self.format], to: url)
    }

    /// Reads a vector written by ``write(to:)``.
    public init(contentsOf url: URL) throws(TaskVectorError) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(contentsOf: url) } catch { throw .unreadable(error.description) }
        guard file.metadata[Self.formatKey] == Self.format else {
            throw .unreadable("\(url.lastPathComponent) is not a task vector (metadata \(Self.formatKey) must be \(Self.format))")
        }
        var deltas: [String: (shape: [Int], values: [Double])] = [:]
        for entry in file.entries {
            guard entry.dtype == .f64 else { throw .unreadable("tensor '\(entry.name)' is \(entry.dtype.rawValue); task vectors are F64") }
            let bytes: Data
            do { bytes = try file.storedBytes(named: entry.name) } catch { throw .unreadable(error.description) }
            let values = bytes.withUnsafeBytes { raw in
                (0..<(raw.count / 8)).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))) }
            }
            guard values.allSatisfy(\.isFinite) else { throw .nonFinite(tensor: entry.name) }
            deltas[entry.name] = (entry.shape, values)
        }
        self.deltas = deltas
    }
}

/// Why a task vector cannot be made, read or applied.
public enum TaskVectorError: Error, Equatable, CustomStringConvertible {
    case mismatchedModels(String)
    case shapeMismatch(tensor: String, expected: [Int], actual: [Int])
    case unknownTensor(name: String, closest: [String])
    case guardedTensor(String)
    case nonFinite(tensor: String)
    case unreadable(String)

    public var description: String {
        switch self {
        case let .mismatchedModels(reason): return reason
        case let .shapeMismatch(tensor, expected, actual): return "tensor '\(tensor)': shape \(actual) where \(expected) is needed"
        case let .unknownTensor(name, closest):
            return "the model has no tensor '\(name)'" + (closest.isEmpty ? "" : "; closest: " + closest.map { "'\($0)'" }.joined(separator: ", "))
        case let .guardedTensor(name):
            return "the task vector changes '\(name)', which the publisher's guard freezes; refusing to apply it"
        case let .nonFinite(tensor): return "tensor '\(tensor)' holds a non-finite difference"
        case let .unreadable(reason): return "cannot read the task vector: \(reason)"
        }
    }
}
