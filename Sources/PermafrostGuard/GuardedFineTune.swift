import Foundation
import PermafrostDiffusion
import PermafrostEval
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Dynamic freezing during a fine-tune, on top of the guard and the user's plan.
public enum FineTuneScheduler: Sendable, Equatable {
    case none
    /// SlimFit: freeze the `budget` fraction of least-moving candidate tensors before each step.
    case slimFit(budget: Double)

    public var name: String {
        switch self {
        case .none: return "none"
        case .slimFit: return "slimfit"
        }
    }
}

/// Settings of a user's fine-tuning run.
public struct FineTuneSettings: Sendable, Equatable {
    public var steps = 300
    public var batchSize = 32
    public var learningRate: Float = 1e-3
    public var seed: UInt64 = 0
    public var scheduler = FineTuneScheduler.none
    /// 8-bit saved activations (SlimFit's compression), optionally for weight-gradient inputs too.
    public var activationCompression = ActivationCompression.none
    /// With a checkpoint folder, save the training state every this many steps.
    public var checkpointEvery: Int?
    /// The optimizer (the recipe's AdamW by default).
    public var optimizer = TrainingOptimizer.adamW
    /// The peak rate after the warm-up instead of a cosine decay.
    public var constantLearningRate = false
    /// Train low-rank adapters on these layers instead of the base's tensors (which all stay frozen).
    public var lora: LoRASettings?

    public init(steps: Int = 300, batchSize: Int = 32, learningRate: Float = 1e-3, seed: UInt64 = 0,
                scheduler: FineTuneScheduler = .none, activationCompression: ActivationCompression = .none, checkpointEvery: Int? = nil) {
        self.steps = steps
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.seed = seed
        self.scheduler = scheduler
        self.activationCompression = activationCompression
        self.checkpointEvery = checkpointEvery
    }
}

/// Low-rank adapters for a fine-tune: the layers (globs over module names, as in FreezePlan) and
/// their shape. A layer whose weight the guard freezes is refused.
public struct LoRASettings: Sendable, Equatable {
    public var targets: [String]
    public var configuration: LoRAConfiguration

    public init(targets: [String], configuration: LoRAConfiguration = LoRAConfiguration()) {
        self.targets = targets
        self.configuration = configuration
    }
}

/// Why a guarded fine-tune refused to start or stopped.
public enum GuardedFineTuneError: Error, CustomStringConvertible {
    case guardRefused(GuardError)
    case plan(FreezeError)
    case lora(LoRAError)
    case invalidSettings(String)
    case noTrainingData
    case classSlotOutOfRange(slot: Int, slots: Int)
    case unreadableCheckpoint(path: String, reason: String)
    case cancelled(step: Int)
    case nonFiniteLoss(step: Int, loss: Float)
    /// A guarded tensor changed: an engine bug; nothing was saved.
    case guardViolated(names: [String])

    public var description: String {
        switch self {
        case let .guardRefused(error): return "refusing to fine-tune: \(error.description)"
        case let .plan(error): return error.description
        case let .lora(error): return error.description
        case let .invalidSettings(reason): return reason
        case .noTrainingData: return "the training set is empty"
        case let .classSlotOutOfRange(slot, slots): return "class slot \(slot) is outside the model's \(slots) slots"
        case let .unreadableCheckpoint(path, reason): return "the checkpoint '\(path)' cannot be resumed: \(reason)"
        case let .cancelled(step): return "cancelled at step \(step)"
        case let .nonFiniteLoss(step, loss): return "the loss became \(loss) at step \(step); lower the learning rate"
        case let .guardViolated(names): return "guard violated: \(names.prefix(5).joined(separator: ", ")) changed (an engine bug; nothing was saved)"
        }
    }
}

/// A user's fine-tuning of a diffusion base with a publisher's guard enforced: the one
/// implementation behind `permafrost finetune`, the service's jobs and the evaluation protocols.
///
/// It verifies the guard (signature, base digest, and every guarded tensor's digest against the
/// weights in hand), enforces it (guarded tensors get no gradient and no optimizer state, a user's
/// plan may add frozen tensors but never remove guarded ones), trains with an optional dynamic
/// freezer over the run's own plan, re-hashes every guarded tensor at the end, and writes the delta.
///
/// ```swift
/// let base = try GuardedFineTune.Base(directory: baseURL)
/// let guardManifest = try GuardManifest.load(from: guardURL)
/// let run = try GuardedFineTune(base: base, guard: guardManifest, trustedPublisherKey: publisherKey,
///                               data: images, settings: FineTuneSettings(steps: 300))
/// let report = try run.run(delta: outputURL.appendingPathComponent("delta.safetensors"))
/// assert(report.guardedTensorsBitIdentical == true)
/// ```
public final class GuardedFineTune {
    /// The base a run starts from: its weights and the SHA-256 of its checkpoint file.
    public struct Base {
        public var model: UNet2DModel
        public var sha256: String

        public init(model: UNet2DModel, sha256: String) {
            self.model = model
            self.sha256 = sha256
        }

        /// Loads a diffusers `UNet2DModel` folder and hashes its weights file.
        public init(directory: URL) throws {
            model = try UNet2DModel(directory: directory)
            sha256 = try sha256Hex(of: directory.appendingPathComponent(UNet2DModel.weightsFileName))
        }
    }

    public let trainer: DiffusionTrainer
    public let settings: FineTuneSettings
    public let baseSHA256: String
    /// The enforced guard (nil: an unguarded run, whose report proves nothing about guarded tensors).
    public let manifest: GuardManifest?
    /// The model being trained (the base's weights, or the checkpoint's when resumed).
    public var model: UNet2DModel { trainer.model }
    /// The step the run resumed from, when it did.
    public let resumedFromStep: Int?

    /// Prepares a run; nothing trains until ``run(checkpoint:delta:deltaMetadata:isCancelled:progress:)``.
    ///
    /// - Parameters:
    ///   - base: the published base. Its weights are trained in place.
    ///   - manifest: the guard to enforce. It must be signed (by `trustedPublisherKey` when given)
    ///     unless `acceptUnsigned`, must name `base`'s digest, and its tensor digests must match the weights.
    ///   - trustedPublisherKey: the publisher's Ed25519 public key (base64); nil accepts the manifest's own key.
    ///   - acceptUnsigned: run an unsigned manifest (an evaluation's own masks); a signed one is always verified.
    ///   - userPlan: tensors the user freezes in addition to the guard.
    ///   - data: the training images and their class slots.
    ///   - settings: steps, batch, rate, seed, scheduler, activation compression, checkpoint interval.
    ///   - checkpoint: a checkpoint folder written by an earlier run of the same job; when it holds
    ///     a training state, the run continues from it (the guard is checked against its weights).
    public init(base: Base, guard manifest: GuardManifest?, trustedPublisherKey: String? = nil, acceptUnsigned: Bool = false,
                userPlan: FreezePlan = FreezePlan(), data: LabeledImages, settings: FineTuneSettings,
                resumingFrom checkpoint: URL? = nil) throws(GuardedFineTuneError) {
        guard settings.steps > 0, settings.batchSize > 0, settings.learningRate > 0, settings.learningRate.isFinite else {
            throw .invalidSettings("steps, batch size and learning rate must be positive (got \(settings.steps), \(settings.batchSize), \(settings.learningRate))")
        }
        if case let .slimFit(budget) = settings.scheduler, !(budget >= 0 && budget < 1) {
            throw .invalidSettings("the SlimFit freeze budget must be in [0, 1), got \(budget)")
        }
        guard data.count > 0 else { throw .noTrainingData }
        if let slots = base.model.config.numClassEmbeds, let bad = data.labels.first(where: { $0 < 0 || $0 >= slots }) {
            throw .classSlotOutOfRange(slot: bad, slots: slots)
        }
        if let manifest {
            do throws(GuardError) {
                if !(acceptUnsigned && manifest.signature == nil) { try manifest.verifySignature(trustedKey: trustedPublisherKey) }
                guard manifest.baseSHA256 == base.sha256 else { throw .baseMismatch(expected: manifest.baseSHA256, actual: base.sha256) }
            } catch { throw .guardRefused(error) }
        }

        // Adapters go on before the trainer sees the model, after the guard marks what they may not touch.
        var baseTensors = Set<String>()
        if let lora = settings.lora {
            if let checkpoint, FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent("state.safetensors").path) {
                throw .invalidSettings("a LoRA fine-tune cannot resume from a checkpoint")
            }
            guard settings.checkpointEvery == nil else { throw .invalidSettings("a LoRA fine-tune writes no checkpoints (it restarts instead)") }
            baseTensors = Set(base.model.namedParameters().map(\.name))
            do throws(FreezeError) { if let manifest { try base.model.apply(manifest.plan) } } catch { throw .plan(error) }
            do { try base.model.addLowRankAdapters(matching: lora.targets, configuration: lora.configuration, seed: settings.seed) } catch {
                throw .lora(error)
            }
        }
        let trainer: DiffusionTrainer
        if let checkpoint, FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent("state.safetensors").path) {
            do { trainer = try DiffusionTrainer.resume(from: checkpoint, data: data) } catch {
                throw .unreadableCheckpoint(path: checkpoint.path, reason: "\(error)")
            }
            resumedFromStep = trainer.step
        } else {
            var options = DiffusionTrainingOptions.fineTuning(steps: settings.steps, batchSize: settings.batchSize,
                                                              learningRate: settings.learningRate, seed: settings.seed)
            if let every = settings.checkpointEvery { options.checkpointEvery = every }
            if settings.optimizer != .adamW { options.optimizer = settings.optimizer }
            if settings.constantLearningRate { options.constantLearningRate = true }
            trainer = DiffusionTrainer(model: base.model, data: data, options: options)
            resumedFromStep = nil
        }
        if let manifest {
            // The digests, not only the file's: the weights in hand (a base, or a checkpoint's) must be
            // the ones the publisher guarded.
            do throws(GuardError) {
                let changed = try manifest.changedTensors(in: trainer.model)
                guard changed.isEmpty else { throw .tensorChanged(names: changed) }
            } catch { throw .guardRefused(error) }
        }
        do throws(FreezeError) {
            if let manifest { try trainer.model.apply(manifest.plan) }
            try trainer.setBasePlan(FreezePlan(frozen: userPlan.frozen.union(baseTensors), frozenRows: userPlan.frozenRows.mapValues { $0.map(\.range) }))
        } catch { throw .plan(error) }
        switch settings.scheduler {
        case .none: break
        case let .slimFit(budget): trainer.scheduler = SlimFitScheduler(budget: budget)
        }
        trainer.activationCompression = settings.activationCompression
        self.trainer = trainer
        self.settings = settings
        self.manifest = manifest
        baseSHA256 = base.sha256
    }

    /// Trains to the end, then proves the guard held and (with `delta`) writes the delta checkpoint.
    ///
    /// - Parameters:
    ///   - checkpoint: where to save the training state every `settings.checkpointEvery` steps.
    ///   - delta: where to write the trainable tensors (atomically), bound to the base's digest.
    ///   - isCancelled: asked before every step; true stops the run with ``GuardedFineTuneError/cancelled(step:)``.
    public func run(checkpoint: URL? = nil, delta: URL? = nil, deltaMetadata: [String: String] = [:],
                    isCancelled: () -> Bool = { false }, progress: (TrainingProgress) -> Void = { _ in }) throws -> FineTuneReport {
        MemoryStatistics.returnFreeMemoryToSystem()
        let firstStep = trainer.step, total = trainer.options.steps
        var lastLoss: Float?, averageLoss: Float?, lastMemory: MemoryReport?
        var peak = 0, steadyPeak: Int?, stepTimes: [Double] = []
        let start = Date()
        var stepStart = Date()
        do {
            // Checkpoints only where a run asked for them, and none at the end: the delta is the result.
            try trainer.train(checkpointDirectory: settings.checkpointEvery == nil ? nil : checkpoint, checkpointAtEnd: false,
                              isCancelled: isCancelled) { p in
                (lastLoss, averageLoss, lastMemory) = (p.loss, p.averageLoss, p.memory)
                peak = max(peak, p.memory.peakBytes)
                if p.step > 10 {
                    steadyPeak = max(steadyPeak ?? 0, p.memory.peakBytes)
                    stepTimes.append(Date().timeIntervalSince(stepStart))
                }
                stepStart = Date()
                progress(p)
            }
        } catch let stop as TrainingCancelled {
            throw GuardedFineTuneError.cancelled(step: stop.step)
        } catch TrainingError.nonFiniteLoss(let loss) {
            throw GuardedFineTuneError.nonFiniteLoss(step: trainer.step, loss: loss)
        }
        let seconds = Date().timeIntervalSince(start)

        // Between steps the model is frozen exactly as the guard and the user's plan say, so the
        // trainable tensors are the delta's.
        let parameters = model.namedParameters()
        let byName = Dictionary(parameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        let guarded = (manifest?.frozen ?? []).map { name in
            FineTuneReport.GuardedTensor(name: name, expectedSHA256: manifest?.frozenSHA256[name] ?? "",
                                         actualSHA256: byName[name].map { tensorDigest($0.value) } ?? "")
        }
        let changed = guarded.filter { $0.expectedSHA256 != $0.actualSHA256 }.map(\.name)
        guard changed.isEmpty else { throw GuardedFineTuneError.guardViolated(names: changed) }
        let trainable = parameters.filter { !$0.parameter.isFrozen }
        var deltaDigest: String?
        if let delta {
            try DeltaCheckpoint.save(model, baseDigest: baseSHA256, to: delta, metadata: deltaMetadata)
            deltaDigest = try sha256Hex(of: delta)
        }
        var budget: Double?
        if case let .slimFit(b) = settings.scheduler { budget = b }
        return FineTuneReport(
            baseSHA256: baseSHA256, guardPublicKey: manifest?.publicKey, guardSignature: manifest?.signature,
            guardedTensorsBitIdentical: manifest.map { _ in changed.isEmpty }, guardedTensors: guarded, changedGuardedTensors: changed,
            deltaTensors: trainable.map(\.name), deltaSHA256: deltaDigest,
            frozenTensors: parameters.count - trainable.count, trainableTensors: trainable.count,
            trainableParameters: trainable.reduce(0) { $0 + $1.parameter.value.count },
            classSlots: Set(trainer.data.labels).sorted(), steps: total, resumedFromStep: resumedFromStep,
            finalLoss: lastLoss.map(Double.init), averageLoss: averageLoss.map(Double.init),
            secondsPerStep: seconds / Double(max(total - firstStep, 1)),
            medianSecondsPerStep: stepTimes.isEmpty ? nil : median(stepTimes),
            peakTensorBytes: lastMemory == nil ? nil : peak, steadyPeakTensorBytes: steadyPeak, memory: lastMemory,
            peakRSSMegabytes: MemoryStatistics.peakResidentMegabytes, scheduler: settings.scheduler.name, freezeBudget: budget,
            activationCompression: settings.activationCompression != .none,
            weightInputCompression: settings.activationCompression == .int8WithWeightInputs)
    }
}

extension GuardedFineTune {
    /// After a LoRA run: writes the trained adapters as a PEFT folder (`peft` loads it onto the base),
    /// then merges them into the model, so ``model`` is a plain UNet2DModel that computes the same.
    /// Returns the SHA-256 of the folder's two files (nil for a run without adapters).
    @discardableResult
    public func finishAdapters(writingTo folder: URL, baseModel: String?) throws -> (weights: String, configuration: String)? {
        guard settings.lora != nil else { return nil }
        try PEFTAdapter(model: model, baseModel: baseModel).write(to: folder)
        try model.mergeLowRankAdapters()
        return (try sha256Hex(of: folder.appendingPathComponent(PEFTAdapter.weightsFileName)),
                try sha256Hex(of: folder.appendingPathComponent(PEFTAdapter.configurationFileName)))
    }
}

extension FineTuneReport: CustomStringConvertible {
    /// Steps, time, loss and freezing; then the guard's proof when there was a guard.
    public var description: String {
        let run = String(format: "fine-tuned %d steps (%.2f s/step), loss %.4f; %d tensors frozen, %d trainable", steps, secondsPerStep,
                         averageLoss ?? .nan, frozenTensors, trainableTensors)
        guard let intact = guardedTensorsBitIdentical else { return run }
        return run + "\n" + (intact ? "guard: all \(guardedTensors.count) guarded tensors bit-identical to the base (report.json)"
                                     : "guard VIOLATED: \(changedGuardedTensors.count) guarded tensors changed")
    }
}

extension FineTuneReport {
    /// Writes the report as pretty, key-sorted JSON, atomically.
    public func write(to url: URL) throws { try AtomicFile.writeJSON(self, to: url) }
}
