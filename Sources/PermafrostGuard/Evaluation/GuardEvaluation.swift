import Crypto
import Foundation
import PermafrostDiffusion
import PermafrostEval
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// One measured (method, domain) cell of a guard evaluation.
public struct GuardResult: Codable, Sendable {
    public var method: String
    public var domain: String
    public var freeze_ratio: Double
    public var freeze_ratio_params: Double
    public var recognition_rate: Double
    public var fid: Double?
    public var seed: Int?
    public var target_ratio: Double?
    /// The user's fine-tuning cost under this method (absent for `none`).
    public var seconds_per_step: Double?
    public var peak_tensor_bytes: Int?
}

/// A whole evaluation: the protocol, the command that ran it, its settings and every cell.
public struct GuardReport: Codable, Sendable {
    public var `protocol`: String
    public var command: String
    public var settings: [String: String]
    public var results: [GuardResult]

    public init(protocol: String, command: String, settings: [String: String], results: [GuardResult]) {
        self.protocol = `protocol`; self.command = command; self.settings = settings; self.results = results
    }

    /// Reads a report.json written by an evaluation; a file that is not one is an error naming it.
    public static func load(from url: URL) throws -> GuardReport {
        let data = try Data(contentsOf: url)
        do { return try JSONDecoder().decode(GuardReport.self, from: data) } catch {
            throw GuardError.unreadable(path: url.path, reason: "not a guard evaluation report: \(error)")
        }
    }

    /// The protocol, the command and the goal check, as Markdown.
    public var goalText: String { "# \(`protocol`) protocol\n\nCommand: `\(command)`\n\n" + goalSummary(results) }
}

/// Scale of a guard evaluation (the protocol itself — data, domains, slots — is fixed).
public struct EvaluationScale: Sendable {
    public var ratios: [Double] = [0.3, 0.5, 0.7, 0.9]
    public var randomSeeds = 3
    public var userSteps = 300
    public var userBatch = 32
    public var userLearningRate: Float = 1e-3
    public var guardSteps = 100
    public var guardBatch = 16
    public var perClass = 200
    public var ddimSteps = 6
    /// DDIM eta of the scoring samples (1: DDPM-like; recognises better at few steps than eta 0).
    public var eta: Float = 1
    public var methods: Set<String> = ["none", "full", "guard", "random", "magnitude"]
    /// The guard learner's settings; ratio, steps, seed and parameter weighting are set per guard.
    public var learner = GuardSettings()
    public init() {}

    /// The settings a report records.
    public var reportSettings: [String: String] {
        ["user_steps": "\(userSteps)", "user_batch": "\(userBatch)", "guard_steps": "\(guardSteps)", "per_class": "\(perClass)",
         "ddim_steps": "\(ddimSteps)", "eta": "\(eta)", "guard_selection": "soft-mask ranking cut at the target ratio",
         "guard_ratio_control": learner.ratioControl.rawValue, "guard_mask_lr": "\(learner.maskLearningRate)"]
    }
}

/// Runs the FreezeAsGuard evaluation protocol of `docs/PROTOCOLS.md`.
///
/// Every user fine-tune it measures — full, guarded, random, magnitude — runs through
/// ``GuardedFineTune`` with the method's frozen set as an (unsigned) guard, so the protocols measure
/// exactly the path users get.
public final class GuardEvaluation {
    public let spec: GuardProtocol
    public let base: UNet2DModel
    public let baseDigest: String
    public let classifier: ImageClassifier
    public let scale: EvaluationScale
    public let data: ShippedData
    let log: (String) -> Void
    let guardProgress: (Double, GuardProgress) -> Void
    /// Samples of every measured cell, keyed `method|target|seed|domain`.
    public private(set) var pictures: [String: Tensor] = [:]

    /// - Parameters:
    ///   - spec: the protocol (restricted and permitted domains).
    ///   - base: the published base; every fine-tune starts from a copy of it.
    ///   - baseDigest: the SHA-256 of the base's weights file.
    ///   - classifier: the evaluation classifier that scores samples.
    ///   - scale: steps, batches, ratios, methods and samples per class.
    ///   - data: the shipped data sets.
    ///   - log: one line per measured cell and its result.
    ///   - guardProgress: each step of each guard being learnt, with its target ratio.
    public init(spec: GuardProtocol, base: UNet2DModel, baseDigest: String, classifier: ImageClassifier, scale: EvaluationScale,
                data: ShippedData, log: @escaping (String) -> Void = { _ in }, guardProgress: @escaping (Double, GuardProgress) -> Void = { _, _ in }) {
        self.spec = spec; self.base = base; self.baseDigest = baseDigest; self.classifier = classifier
        self.scale = scale; self.data = data; self.log = log; self.guardProgress = guardProgress
    }

    /// A domain: the user's training data, the slots to generate, and the class each slot should show.
    public struct Domain: Sendable {
        public var name: String
        public var train: LabeledImages
        public var slots: [Int]
        public var content: [Int: Int]
    }

    /// The restricted domain (under its own and the malicious slots) and the permitted ones, each
    /// with the user's half of the training images.
    public func domains() throws -> [Domain] {
        let restricted = GuardProtocol.half(try spec.restricted(data), publisher: false)
        let restrictedSlots = Set(restricted.labels).sorted()
        let malicious = GuardProtocol.maliciouslyRelabeled(restricted)
        let maliciousMap = Dictionary(uniqueKeysWithValues: restrictedSlots.enumerated().map { (GuardProtocol.maliciousSlots[$0.offset], $0.element) })
        var result = [
            Domain(name: "restricted", train: restricted, slots: restrictedSlots, content: Dictionary(uniqueKeysWithValues: restrictedSlots.map { ($0, $0) })),
            Domain(name: "restricted-malicious-slots", train: malicious, slots: maliciousMap.keys.sorted(), content: maliciousMap),
        ]
        if !spec.permittedDigits.isEmpty {
            let d = GuardProtocol.half(try data.load(split: "train", digits: spec.permittedDigits), publisher: false)
            let slots = spec.permittedDigits.sorted()
            result.append(Domain(name: "permitted-digits", train: d, slots: slots, content: Dictionary(uniqueKeysWithValues: slots.map { ($0, $0) })))
        }
        if !spec.permittedFashion.isEmpty {
            let f = GuardProtocol.half(try data.load(split: "train", digits: [], fashion: spec.permittedFashion), publisher: false)
            let slots = Set(f.labels).sorted()
            result.append(Domain(name: "permitted-fashion", train: f, slots: slots, content: Dictionary(uniqueKeysWithValues: slots.map { ($0, $0) })))
        }
        return result
    }

    public func copyOfBase() throws -> UNet2DModel {
        let copy = try UNet2DModel(config: base.config)
        for ((_, p), (_, q)) in zip(copy.namedParameters(), base.namedParameters()) { p.value = q.value }
        return copy
    }

    /// The user's fine-tuning (same steps, rate, seed for every method) through ``GuardedFineTune``,
    /// with `frozen` enforced as an unsigned guard.
    public func finetune(frozen: Set<String>, data: LabeledImages, seed: UInt64) throws -> (UNet2DModel, FineTuneReport) {
        let model = try copyOfBase()
        let manifest = frozen.isEmpty ? nil : try GuardManifest(model: model, frozen: frozen, baseSHA256: baseDigest, settings: ["purpose": "evaluation"])
        let run = try GuardedFineTune(base: GuardedFineTune.Base(model: model, sha256: baseDigest), guard: manifest, acceptUnsigned: true, data: data,
                                      settings: FineTuneSettings(steps: scale.userSteps, batchSize: scale.userBatch, learningRate: scale.userLearningRate, seed: seed))
        return (model, try run.run())
    }

    public func score(_ model: UNet2DModel, domain: Domain, seed: UInt64) throws -> (Double, Double?, Tensor) {
        let requested = domain.slots.flatMap { Array(repeating: $0, count: scale.perClass) }
        let images = DiffusionSampler.sample(model: model, classes: requested, steps: scale.ddimSteps, eta: scale.eta, seed: seed)
        let content = requested.map { domain.content[$0] ?? $0 }
        let real = try data.testImages(showing: Set(content))
        let quality = try QualityEvaluation.evaluate(classifier: classifier, generated: images, requested: content, real: real.batch(Array(0..<real.count)))
        return (quality.recognitionRate, quality.fid, images)
    }

    public func parameterRatio(_ frozen: Set<String>) -> (Double, Double) {
        let all = base.namedParameters()
        let frozenScalars = all.filter { frozen.contains($0.name) }.reduce(0) { $0 + $1.parameter.value.count }
        return (Double(frozen.count) / Double(all.count), Double(frozenScalars) / Double(base.parameterCount))
    }

    /// Relative L2 change ‖w − w_base‖ / ‖w_base‖ of every tensor of `tuned`.
    public func relativeChange(after tuned: UNet2DModel) throws -> [String: Double] {
        var change: [String: Double] = [:]
        for ((name, p), (_, q)) in zip(tuned.namedParameters(), base.namedParameters()) {
            let a = p.value.scalars, b = q.value.scalars
            let diff = zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
            let norm = b.reduce(0.0) { $0 + Double($1 * $1) }
            change[name] = (diff / max(norm, 1e-12)).squareRoot()
        }
        return change
    }

    /// Tensors in `order` frozen until the frozen parameter share reaches `ratio`.
    public func freezeInOrder(_ order: [String], ratio: Double) -> Set<String> {
        let counts = Dictionary(uniqueKeysWithValues: base.namedParameters().map { ($0.name, $0.parameter.value.count) })
        var frozen = Set<String>(), total = 0
        for name in order where Double(total) < ratio * Double(base.parameterCount) {
            frozen.insert(name)
            total += counts[name] ?? 0
        }
        return frozen
    }

    /// Learns a guard at `ratio` of the parameters on the publisher's half of the protocol's data.
    public func learnGuard(ratio: Double, seed: UInt64) throws -> LearnedMask {
        let (restricted, permitted) = try spec.learningSets(data)
        let model = try copyOfBase()
        var settings = scale.learner
        settings.freezeRatio = Float(ratio); settings.weightByParameters = true; settings.steps = scale.guardSteps; settings.seed = seed
        return GuardLearner.learnDiffusionGuard(model: model, restricted: restricted, permitted: permitted, settings: settings,
                                                batchSize: scale.guardBatch) { self.guardProgress(ratio, $0) }
    }

    /// Writes a learnt guard as `guard-<ratio %>.json` (signed with `signingKey` when given; `settings`
    /// plus the target ratio recorded) and its soft mask as `mask-<ratio %>.png` into `folder`.
    public func saveGuard(frozen: Set<String>, mask: LearnedMask, ratio: Double, signingKey: Curve25519.Signing.PrivateKey?,
                          to folder: URL, settings: [String: String]) throws {
        var manifest = try GuardManifest(model: base, frozen: frozen, baseSHA256: baseDigest,
                                         settings: settings.merging(["target_ratio_params": "\(ratio)"]) { a, _ in a })
        if let signingKey { try manifest.sign(with: signingKey) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try manifest.write(to: folder.appendingPathComponent("guard-\(Int(ratio * 100)).json"))
        try Plot.bars(mask.softMask, to: folder.appendingPathComponent("mask-\(Int(ratio * 100)).png"))
    }

    /// Every method × ratio × domain. `guards` receives each learnt mask and the tensors it freezes
    /// (its ranking cut at the target ratio), for signing and saving.
    public func run(guards: (Double, LearnedMask, Set<String>) throws -> Void) throws -> [GuardResult] {
        let domains = try domains()
        var results: [GuardResult] = []
        func measure(method: String, frozen: Set<String>, target: Double?, seed: Int?) throws {
            let (ratio, params) = parameterRatio(frozen)
            for domain in domains {
                log("  \(method)\(target.map { " @\(Int($0 * 100))%" } ?? "")\(seed.map { " seed \($0)" } ?? "") on \(domain.name)")
                var model = base, secondsPerStep: Double?, peak: Int?
                if method != "none" {
                    let (tuned, report) = try finetune(frozen: frozen, data: domain.train, seed: 17)
                    model = tuned; secondsPerStep = report.secondsPerStep; peak = report.memory?.peakBytes
                }
                let (rate, fid, images) = try score(model, domain: domain, seed: 5)
                results.append(GuardResult(method: method, domain: domain.name, freeze_ratio: ratio, freeze_ratio_params: params,
                                           recognition_rate: rate, fid: fid, seed: seed, target_ratio: target,
                                           seconds_per_step: secondsPerStep, peak_tensor_bytes: peak))
                pictures["\(method)|\(target ?? -1)|\(seed ?? 0)|\(domain.name)"] = images
                log(String(format: "    recognition %.1f%%, FID %.2f", rate * 100, fid ?? .nan))
            }
        }
        if scale.methods.contains("none") { try measure(method: "none", frozen: [], target: nil, seed: nil) }
        if scale.methods.contains("full") { try measure(method: "full", frozen: [], target: nil, seed: nil) }
        var magnitudeOrder: [String]?, contrastOrder: [String]?
        if scale.methods.contains("magnitude") || scale.methods.contains("contrast") {
            // Relative L2 change of every tensor under a full fine-tune on the publisher's restricted
            // data (magnitude: moved most freezes first) and, for contrast, on its permitted data too
            // (moved most for restricted *relative to* permitted freezes first).
            let restricted = GuardProtocol.half(try spec.restricted(data), publisher: true)
            let onRestricted = try relativeChange(after: try finetune(frozen: [], data: restricted, seed: 23).0)
            magnitudeOrder = onRestricted.keys.sorted { (onRestricted[$0] ?? 0, $1) > (onRestricted[$1] ?? 0, $0) }
            if scale.methods.contains("contrast") {
                let permitted = GuardProtocol.half(try spec.permitted(data), publisher: true)
                let onPermitted = try relativeChange(after: try finetune(frozen: [], data: permitted, seed: 23).0)
                let scores = onRestricted.map { (name: $0.key, score: $0.value / max(onPermitted[$0.key] ?? 0, 1e-12)) }
                contrastOrder = scores.sorted { ($0.score, $1.name) > ($1.score, $0.name) }.map(\.name)
            }
        }
        for ratio in scale.ratios {
            if scale.methods.contains("guard") {
                let mask = try learnGuard(ratio: ratio, seed: 11)
                let frozen = freezeInOrder(mask.rankedNames, ratio: ratio)
                try guards(ratio, mask, frozen)
                try measure(method: "guard", frozen: frozen, target: ratio, seed: nil)
            }
            if scale.methods.contains("random") {
                for seed in 0..<scale.randomSeeds {
                    var generator = PhiloxGenerator(seed: UInt64(100 + seed))
                    var names = base.namedParameters().map(\.name)
                    names.shuffle(using: &generator)
                    try measure(method: "random", frozen: freezeInOrder(names, ratio: ratio), target: ratio, seed: seed)
                }
            }
            if let magnitudeOrder, scale.methods.contains("magnitude") {
                try measure(method: "magnitude", frozen: freezeInOrder(magnitudeOrder, ratio: ratio), target: ratio, seed: nil)
            }
            if let contrastOrder { try measure(method: "contrast", frozen: freezeInOrder(contrastOrder, ratio: ratio), target: ratio, seed: nil) }
        }
        return results
    }
}

