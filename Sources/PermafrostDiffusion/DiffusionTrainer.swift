import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Settings of epsilon-prediction training.
public struct DiffusionTrainingOptions: Codable, Sendable, Equatable {
    public var steps = 2000
    public var batchSize = 32
    public var learningRate: Float = 1e-3
    public var warmupSteps = 200
    public var minimumLearningRate: Float = 1e-5
    public var weightDecay: Float = 0.01
    public var gradientClip: Float? = 1
    /// EMA decay (nil: no EMA). The effective decay warms up as min(decay, (1+t)/(10+t)).
    public var emaDecay: Float? = 0.999
    public var checkpointEvery = 500
    public var seed: UInt64 = 0
    public var betaSchedule: BetaSchedule = .linear
    /// The optimizer (nil: AdamW with ``weightDecay``, the recipe's own).
    public var optimizer: TrainingOptimizer?
    /// Keep the rate at its peak after the warm-up instead of the cosine decay (nil: cosine).
    public var constantLearningRate: Bool?
    public init() {}

    /// Options with a warm-up of a tenth of the steps, at most `maximumWarmup`.
    public init(steps: Int, batchSize: Int, learningRate: Float, maximumWarmup: Int, emaDecay: Float?, checkpointEvery: Int, seed: UInt64) {
        self.steps = steps
        self.batchSize = batchSize
        self.learningRate = learningRate
        warmupSteps = Swift.min(maximumWarmup, steps / 10)
        self.emaDecay = emaDecay
        self.checkpointEvery = checkpointEvery
        self.seed = seed
    }

    /// A user's fine-tuning run: no EMA, a short warm-up (a tenth of the steps, at most 50).
    public static func fineTuning(steps: Int, batchSize: Int, learningRate: Float, seed: UInt64) -> DiffusionTrainingOptions {
        DiffusionTrainingOptions(steps: steps, batchSize: batchSize, learningRate: learningRate, maximumWarmup: 50, emaDecay: nil,
                                 checkpointEvery: Swift.max(steps, 1), seed: seed)
    }

    /// Pretraining from scratch: a warm-up of a tenth of the steps (at most 200), EMA `emaDecay` (nil: none).
    public static func pretraining(steps: Int, batchSize: Int, learningRate: Float, emaDecay: Float?, checkpointEvery: Int, seed: UInt64) -> DiffusionTrainingOptions {
        DiffusionTrainingOptions(steps: steps, batchSize: batchSize, learningRate: learningRate, maximumWarmup: 200, emaDecay: emaDecay,
                                 checkpointEvery: checkpointEvery, seed: seed)
    }
}

/// One report from the training loop.
public struct TrainingProgress: Sendable {
    public var step: Int
    public var totalSteps: Int
    public var loss: Float
    /// Mean loss over the last reports.
    public var averageLoss: Float
    public var stepsPerSecond: Double
    public var memory: MemoryReport

    public init(step: Int, totalSteps: Int, loss: Float, averageLoss: Float, stepsPerSecond: Double, memory: MemoryReport) {
        self.step = step; self.totalSteps = totalSteps; self.loss = loss
        self.averageLoss = averageLoss; self.stepsPerSecond = stepsPerSecond; self.memory = memory
    }
}

/// The optimizers a training run can use.
public enum TrainingOptimizer: String, Codable, Sendable, CaseIterable {
    /// Adam with decoupled weight decay (the options' `weightDecay`).
    case adamW = "adamw"
    /// Adam without weight decay.
    case adam
    /// SGD with heavy-ball momentum 0.9, no weight decay.
    case sgdMomentum = "sgd-momentum"

    public func make(learningRate: Float, weightDecay: Float) -> Optimizer {
        switch self {
        case .adamW: return Adam.adamW(learningRate: learningRate, weightDecay: weightDecay)
        case .adam: return Adam(learningRate: learningRate)
        case .sgdMomentum: return SGD(learningRate: learningRate, momentum: 0.9)
        }
    }
}

/// Epsilon-prediction MSE training of a class-conditional `UNet2DModel`, with EMA and resumable
/// checkpoints.
///
/// Each step's randomness (batch, noise, timesteps) comes from a Philox stream keyed by the step
/// number, so a run resumed from a checkpoint continues exactly as the uninterrupted run would.
public final class DiffusionTrainer {
    public let model: UNet2DModel
    public let data: LabeledImages
    public private(set) var options: DiffusionTrainingOptions
    public let schedule: NoiseSchedule
    public let optimizer: Optimizer
    /// Exponential moving average of every parameter, by name.
    public private(set) var averaged: [String: Tensor]?
    public private(set) var step = 0
    /// The run's own frozen set, on top of any enforced guard already applied to the model (a user's
    /// plan). Between steps the model is frozen exactly so; a ``scheduler``'s plan is an overlay on
    /// it for one step at a time, so a model or delta saved after any step holds every tensor the run
    /// could train.
    public private(set) var basePlan = FreezePlan()
    /// Decides extra frozen tensors before each step (SlimFit, staged, static), over ``basePlan``;
    /// enforced tensors stay frozen whatever it says.
    public var scheduler: FreezeScheduler?
    /// How activation functions keep their saved tensors (int8: SlimFit's compression).
    public var activationCompression: ActivationCompression = .none

    public init(model: UNet2DModel, data: LabeledImages, options: DiffusionTrainingOptions) {
        precondition(data.count > 0, "no training images")
        self.model = model
        self.data = data
        self.options = options
        schedule = NoiseSchedule(options.betaSchedule)
        optimizer = (options.optimizer ?? .adamW).make(learningRate: options.learningRate, weightDecay: options.weightDecay)
        if options.emaDecay != nil {
            averaged = Dictionary(uniqueKeysWithValues: model.stateDictionary().map { ($0.name, $0.tensor) })
        }
    }

    /// The learning rate at `step`: linear warm-up, then cosine decay (or the peak rate, when constant).
    public func learningRate(at step: Int) -> Float {
        if options.constantLearningRate == true {
            return step < options.warmupSteps ? options.learningRate * Float(step + 1) / Float(options.warmupSteps) : options.learningRate
        }
        return LearningRateSchedule.cosine(peak: options.learningRate, minimum: options.minimumLearningRate,
                                           warmupSteps: options.warmupSteps, totalSteps: options.steps).rate(atStep: step)
    }

    /// Freezes `plan`'s tensors for the whole run (in addition to any enforced guard): the run's
    /// ``basePlan``. Names the model lacks are an error listing the closest names.
    public func setBasePlan(_ plan: FreezePlan) throws(FreezeError) {
        try model.replaceFreezing(with: plan)
        basePlan = plan
    }

    /// Runs one step and returns its loss and memory.
    public func trainStep() throws -> TrainingStepResult {
        var generator = PhiloxGenerator(seed: options.seed, stream: UInt64(step))
        let batch = schedule.batch(of: data, size: options.batchSize, generator: &generator)
        optimizer.learningRate = learningRate(at: step)
        if let scheduler {
            try model.applySchedule(UnionFreezeScheduler(scheduler, plus: basePlan), step: step, optimizer: optimizer)
        }
        let result = try ActivationCompression.with(activationCompression) {
            try model.trainingStep(optimizer: optimizer, clipGradientNorm: options.gradientClip) {
                epsilonPredictionLoss(model, on: batch)
            }
        }
        step += 1
        updateAverage()
        // The scheduler's overlay lasts one step: back to the run's own plan.
        if scheduler != nil { try model.replaceFreezing(with: basePlan) }
        return result
    }

    private func updateAverage() {
        guard let decay = options.emaDecay, var averaged else { return }
        let d = Swift.min(decay, Float(1 + step) / Float(10 + step))
        for (name, parameter) in model.namedParameters() where !parameter.isFrozen {
            guard var average = averaged.removeValue(forKey: name) else { continue }
            average.withUnsafeMutableBufferPointer { a in
                parameter.value.withUnsafeBufferPointer { p in
                    for i in 0..<a.count { a[i] = d * a[i] + (1 - d) * p[i] }
                }
            }
            averaged[name] = average
        }
        self.averaged = averaged
    }

    /// Trains until `options.steps`, checkpointing into `checkpointDirectory` every
    /// `options.checkpointEvery` steps (and at the end), reporting every step.
    public func train(checkpointDirectory: URL?, progress: (TrainingProgress) -> Void) throws {
        try train(checkpointDirectory: checkpointDirectory, checkpointAtEnd: true, isCancelled: { false }, progress: progress)
    }

    /// The training loop with a stop: `isCancelled` is asked before every step and true throws
    /// ``TrainingCancelled``; without `checkpointAtEnd` the last step writes no checkpoint (a run
    /// that saves its result elsewhere and deletes its checkpoints).
    public func train(checkpointDirectory: URL?, checkpointAtEnd: Bool, isCancelled: () -> Bool,
                      progress: (TrainingProgress) -> Void) throws {
        var recent: [Float] = []
        let start = Date()
        let firstStep = step
        while step < options.steps {
            if isCancelled() { throw TrainingCancelled(step: step) }
            let result = try trainStep()
            recent.append(result.loss)
            if recent.count > 50 { recent.removeFirst() }
            let elapsed = Date().timeIntervalSince(start)
            progress(TrainingProgress(step: step, totalSteps: options.steps, loss: result.loss,
                                      averageLoss: recent.reduce(0, +) / Float(recent.count),
                                      stepsPerSecond: Double(step - firstStep) / Swift.max(elapsed, 1e-9), memory: result.memory))
            if let checkpointDirectory, step % options.checkpointEvery == 0 || step == options.steps,
               step < options.steps || checkpointAtEnd {
                try saveCheckpoint(to: checkpointDirectory)
            }
        }
    }

    /// A model holding the EMA weights (or the raw weights without EMA).
    public func averagedModel() throws -> UNet2DModel {
        let copy = try UNet2DModel(config: model.config)
        for (name, parameter) in copy.namedParameters() {
            parameter.value = averaged?[name] ?? model.parameter(named: name)!.value
        }
        return copy
    }

    // MARK: Checkpoints

    /// Writes `model/` (raw weights, diffusers format), `ema/` (EMA weights, diffusers format) and
    /// `state.safetensors` (optimizer moments, step, options) into `directory`. Each file is atomic;
    /// the state is written last, so a crash leaves the previous consistent state readable.
    public func saveCheckpoint(to directory: URL) throws {
        try model.save(directory: directory.appendingPathComponent("model"))
        if averaged != nil { try averagedModel().save(directory: directory.appendingPathComponent("ema")) }
        let (tensors, steps) = exportOptimizerState()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = [
            "permafrost.step": String(step),
            "permafrost.adam_steps": String(decoding: try encoder.encode(steps), as: UTF8.self),
            "permafrost.options": String(decoding: try encoder.encode(options), as: UTF8.self),
        ]
        try SafetensorsWriter.write(tensors.map { (name: $0.name, tensor: $0.tensor) }, metadata: metadata,
                                    to: directory.appendingPathComponent("state.safetensors"))
    }

    private func exportOptimizerState() -> (tensors: [(name: String, tensor: Tensor)], steps: [String: Int]) {
        if let adam = optimizer as? Adam { return adam.exportState() }
        if let sgd = optimizer as? SGD { return (sgd.exportState(), [:]) }
        return ([], [:])
    }

    /// Restores a trainer from a checkpoint directory written by ``saveCheckpoint(to:)``. `steps`
    /// may extend the original run.
    public static func resume(from directory: URL, data: LabeledImages, steps: Int? = nil) throws -> DiffusionTrainer {
        let state = try SafetensorsFile(contentsOf: directory.appendingPathComponent("state.safetensors"))
        guard let stepText = state.metadata["permafrost.step"], let step = Int(stepText),
              let optionsText = state.metadata["permafrost.options"],
              var options = try? JSONDecoder().decode(DiffusionTrainingOptions.self, from: Data(optionsText.utf8)),
              let stepsText = state.metadata["permafrost.adam_steps"],
              let adamSteps = try? JSONDecoder().decode([String: Int].self, from: Data(stepsText.utf8)) else {
            throw DiffusionCheckpointError(path: directory.appendingPathComponent("state.safetensors").path)
        }
        if let steps { options.steps = steps }
        let model = try UNet2DModel(directory: directory.appendingPathComponent("model"))
        let trainer = DiffusionTrainer(model: model, data: data, options: options)
        var tensors: [String: Tensor] = [:]
        for name in state.names { tensors[name] = try state.tensor(named: name) }
        if let adam = trainer.optimizer as? Adam { adam.importState(tensors: tensors, steps: adamSteps) }
        if let sgd = trainer.optimizer as? SGD { sgd.importState(tensors: tensors) }
        trainer.step = step
        if options.emaDecay != nil {
            let emaDirectory = directory.appendingPathComponent("ema")
            if FileManager.default.fileExists(atPath: emaDirectory.path) {
                let ema = try UNet2DModel(directory: emaDirectory)
                trainer.averaged = Dictionary(uniqueKeysWithValues: ema.stateDictionary().map { ($0.name, $0.tensor) })
            }
        }
        return trainer
    }
}

/// A training loop stopped by its caller before `step`.
public struct TrainingCancelled: Error, Equatable {
    public var step: Int
}

/// A training checkpoint whose state file lacks the step, options or optimizer step counts.
public struct DiffusionCheckpointError: Error, CustomStringConvertible {
    public var path: String
    public var description: String { "'\(path)' is not a Permafrost training state (missing step, options or optimizer metadata)" }
}
