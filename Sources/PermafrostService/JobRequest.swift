import Foundation
import PermafrostNN
import PermafrostTensor

/// Bounds on what a user may ask of a fine-tuning job.
public struct JobLimits: Sendable {
    public var maxSteps = 2000
    public var maxBatchSize = 64
    public var learningRates: ClosedRange<Double> = 1e-6...1e-2
    public init() {}
}

/// A validated fine-tuning request (stored as JSON in the job's row).
public struct JobParameters: Codable, Sendable, Equatable {
    public var uploadID: String
    public var steps: Int
    public var batchSize: Int
    public var learningRate: Double
    public var seed: UInt64
    /// Tensors the user freezes on top of the publisher's guard.
    public var freeze: [String]
    /// `none` or `slimfit` (dynamic freezing; the guard stays frozen throughout).
    public var scheduler: String
    public var freezeBudget: Double
    /// `"method": "lora"`: low-rank adapters on these layers train, the base stays frozen; the result is a PEFT adapter.
    public var lora: LoRAJob?

    /// A LoRA job's layers (globs over module names) and shape.
    public struct LoRAJob: Codable, Sendable, Equatable {
        public var targets: [String]
        public var rank: Int
        public var alpha: Double
    }

    enum CodingKeys: String, CodingKey {
        case uploadID = "upload_id", steps, batchSize = "batch_size", learningRate = "learning_rate", seed, freeze, scheduler
        case freezeBudget = "freeze_budget", lora
    }

    static let allowedKeys: Set<String> = ["upload_id", "steps", "batch_size", "learning_rate", "seed", "freeze", "unfreeze", "scheduler", "freeze_budget",
                                           "method", "lora_targets", "lora_rank", "lora_alpha"]

    /// Validates a request body. `tensorNames` are the base model's tensors; `guarded` the tensors
    /// the publisher's guard freezes; `adaptable` the layers LoRA can adapt with the tensors each would
    /// change. Asking to unfreeze a guarded tensor, or to adapt a layer whose weight is guarded, is
    /// refused (403), naming it.
    public static func validate(_ body: Data, limits: JobLimits, tensorNames: [String], guarded: Set<String>,
                                adaptable: [(module: String, weights: [String])] = []) throws(ServiceError) -> JobParameters {
        guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else {
            throw .badRequest("the body must be a JSON object")
        }
        if let unknown = object.keys.sorted().first(where: { !allowedKeys.contains($0) }) {
            throw .invalidJob("unknown field '\(unknown)'; fields are \(allowedKeys.sorted().joined(separator: ", "))")
        }
        func integer(_ key: String, default value: Int?, range: ClosedRange<Int>) throws(ServiceError) -> Int {
            guard let raw = object[key] else {
                guard let value else { throw .invalidJob("'\(key)' is required") }
                return value
            }
            guard let number = raw as? NSNumber, !(raw is Bool), let exact = Int(exactly: number.doubleValue) else {
                throw .invalidJob("'\(key)' must be an integer")
            }
            guard range.contains(exact) else { throw .invalidJob("'\(key)' must be in \(range.lowerBound)…\(range.upperBound), got \(exact)") }
            return exact
        }
        func names(_ key: String) throws(ServiceError) -> [String] {
            guard let raw = object[key] else { return [] }
            guard let list = raw as? [String], list.count <= tensorNames.count else { throw .invalidJob("'\(key)' must be a list of tensor names") }
            let known = Set(tensorNames)
            for name in list where !known.contains(name) {
                let suggestions = closestNames(to: name, among: tensorNames)
                throw .invalidJob("'\(key)' names an unknown tensor '\(name)'" + (suggestions.isEmpty ? "" : "; did you mean \(suggestions.joined(separator: ", "))?"))
            }
            return list
        }
        guard let uploadID = object["upload_id"] as? String, !uploadID.isEmpty, uploadID.count <= 64 else { throw .invalidJob("'upload_id' (a string) is required") }
        let steps = try integer("steps", default: 100, range: 1...limits.maxSteps)
        let batch = try integer("batch_size", default: 16, range: 1...limits.maxBatchSize)
        let seed = try integer("seed", default: 0, range: 0...(1 << 53))
        var rate = 1e-3
        if let raw = object["learning_rate"] {
            guard let number = raw as? NSNumber, !(raw is Bool) else { throw .invalidJob("'learning_rate' must be a number") }
            rate = number.doubleValue
            guard limits.learningRates.contains(rate) else {
                throw .invalidJob("'learning_rate' must be in \(limits.learningRates.lowerBound)…\(limits.learningRates.upperBound), got \(rate)")
            }
        }
        let freeze = try names("freeze")
        let unfreeze = try names("unfreeze")
        if let refused = unfreeze.first(where: { guarded.contains($0) }) {
            throw .guarded("'\(refused)' is frozen by the publisher's signed guard and cannot be unfrozen; \(guarded.count) tensors are guarded (GET /v1/guard lists them)")
        }
        if guarded.union(freeze).count >= tensorNames.count {
            throw .invalidJob("'freeze' together with the guard freezes every tensor; nothing would train")
        }
        let scheduler = (object["scheduler"] as? String) ?? "none"
        guard object["scheduler"] == nil || object["scheduler"] is String, ["none", "slimfit"].contains(scheduler) else {
            throw .invalidJob("'scheduler' must be \"none\" or \"slimfit\"")
        }
        var budget = 0.8
        if let raw = object["freeze_budget"] {
            guard let number = raw as? NSNumber, !(raw is Bool), number.doubleValue >= 0, number.doubleValue < 1 else {
                throw .invalidJob("'freeze_budget' must be a number in [0, 1)")
            }
            budget = number.doubleValue
        }
        let method = (object["method"] as? String) ?? "full"
        guard object["method"] == nil || object["method"] is String, ["full", "lora"].contains(method) else {
            throw .invalidJob("'method' must be \"full\" or \"lora\"")
        }
        var lora: LoRAJob?
        if method == "lora" {
            guard let targets = object["lora_targets"] as? [String], !targets.isEmpty, targets.count <= 64, targets.allSatisfy({ (1...200).contains($0.count) }) else {
                throw .invalidJob("a LoRA job needs 'lora_targets': 1–64 globs over layer names, e.g. [\"*.to_q\", \"*.to_v\"]")
            }
            let layers: [String]
            do { layers = try LowRankTargets.select(targets, among: adaptable.map(\.module)) } catch { throw .invalidJob("'lora_targets': \(error.description)") }
            let weights = Dictionary(adaptable.map { ($0.module, $0.weights) }, uniquingKeysWith: { a, _ in a })
            for layer in layers {
                if let tensor = weights[layer]?.first(where: { guarded.contains($0) }) {
                    throw .guarded("'\(layer)' cannot be adapted: its tensor '\(tensor)' is frozen by the publisher's signed guard, and an adapter would change it")
                }
            }
            let rank = try integer("lora_rank", default: 8, range: 1...64)
            var alpha = Double(rank)
            if let raw = object["lora_alpha"] {
                guard let number = raw as? NSNumber, !(raw is Bool), number.doubleValue > 0, number.doubleValue <= 1024 else {
                    throw .invalidJob("'lora_alpha' must be a number in (0, 1024]")
                }
                alpha = number.doubleValue
            }
            lora = LoRAJob(targets: targets, rank: rank, alpha: alpha)
        } else if let key = ["lora_targets", "lora_rank", "lora_alpha"].first(where: { object[$0] != nil }) {
            throw .invalidJob("'\(key)' needs \"method\": \"lora\"")
        }
        return JobParameters(uploadID: uploadID, steps: steps, batchSize: batch, learningRate: rate, seed: UInt64(seed),
                             freeze: freeze, scheduler: scheduler, freezeBudget: budget, lora: lora)
    }
}
