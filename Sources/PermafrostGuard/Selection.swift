import Foundation
import PermafrostDiffusion
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// How a guard's frozen set is chosen. Every selection ranks the tensors; the guard freezes the top
/// of the ranking up to its ratio (``LearnedMask/frozen(ratio:sizes:)``).
public enum GuardSelection: String, Sendable, CaseIterable {
    /// FreezeAsGuard's bilevel mask learning (``GuardLearner``).
    case learnt
    /// A seeded random ranking: the baseline that tells what a selection adds.
    case random
    /// First-order attribution (the paper's score): how much putting a tensor back to its published
    /// value raises the restricted loss of a model that relearnt the restricted domain, less λ times
    /// what it costs the permitted loss, per parameter.
    case attribution
}

extension GuardSelection {
    /// A random ranking of `names` as a mask: each tensor's score is a uniform draw of the seed's
    /// Philox stream, so the same seed ranks the same model alike.
    public static func randomMask(names: [String], seed: UInt64) -> LearnedMask {
        var generator = PhiloxGenerator(seed: seed, stream: 0xA11)
        let scores = names.map { _ in Float(generator.nextUInt32()) / 4_294_967_296 }
        return LearnedMask(names: names, softMask: scores, trace: [])
    }

    /// Settings of the attribution selection.
    public struct AttributionSettings: Sendable, Equatable {
        /// Steps of the full fine-tune on the restricted data that gives the relearnt model.
        public var relearnSteps = 150
        public var learningRate: Float = 1e-3
        /// λ: weight of the permitted loss's share of the score.
        public var permittedWeight: Float = 1
        /// Batches averaged for the gradient at the relearnt weights.
        public var gradientBatches = 4
        public var batchSize = 16
        public var seed: UInt64 = 0
        public init() {}
    }

    /// Scores every tensor of `model` by ⟨θ_published − θ_relearnt, ∇(L_restricted − λ·L_permitted)(θ_relearnt)⟩
    /// divided by its parameter count: the first-order change of the restricted loss (less λ times the
    /// permitted one) when the tensor is held at its published value while the rest stays relearnt.
    /// The scores are returned as a mask normalised to [0, 1] (highest first in its ranking).
    /// `model` is fine-tuned in place (pass a copy); `published` is the unchanged base.
    public static func attributionMask(model: UNet2DModel, published: UNet2DModel, restricted: LabeledImages, permitted: LabeledImages,
                                       settings: AttributionSettings, progress: (Int, Float) -> Void = { _, _ in }) throws -> LearnedMask {
        let schedule = NoiseSchedule(), seed = settings.seed
        let optimizer = Adam(learningRate: settings.learningRate)
        try model.replaceFreezing(with: FreezePlan())
        for step in 0..<settings.relearnSteps {
            let result = try model.trainingStep(optimizer: optimizer, clipGradientNorm: 1) {
                epsilonPredictionLoss(model, data: restricted, schedule: schedule, batchSize: settings.batchSize, seed: seed, stream: UInt64(step))
            }
            progress(step + 1, result.loss)
        }
        var gradient: [String: Tensor] = [:]
        for k in 0..<settings.gradientBatches {
            let stream = UInt64(1_000_000 + 2 * k)
            let (_, g) = model.valueAndGradient {
                epsilonPredictionLoss(model, data: restricted, schedule: schedule, batchSize: settings.batchSize, seed: seed, stream: stream)
                    - epsilonPredictionLoss(model, data: permitted, schedule: schedule, batchSize: settings.batchSize, seed: seed, stream: stream + 1)
                    * settings.permittedWeight
            }
            for (name, value) in g { gradient[name] = gradient[name].map { $0 + value } ?? value }
        }
        let publishedValues = Dictionary(uniqueKeysWithValues: published.namedParameters().map { ($0.name, $0.parameter.value) })
        var names: [String] = [], scores: [Float] = []
        // Plain arithmetic on parameter values: nothing here is differentiated, so nothing is taped.
        GradientRecording.withoutRecording {
            for (name, parameter) in model.namedParameters() {
                guard let before = publishedValues[name], let g = gradient[name] else { continue }
                let score = ((before - parameter.value) * g).sum().scalar / Float(settings.gradientBatches * parameter.value.count)
                names.append(name)
                scores.append(score.isFinite ? score : -.infinity)
            }
        }
        let finite = scores.filter(\.isFinite), low = finite.min() ?? 0, high = finite.max() ?? 1
        let normalised = scores.map { $0.isFinite ? ($0 - low) / Swift.max(high - low, .leastNonzeroMagnitude) : 0 }
        return LearnedMask(names: names, softMask: normalised, trace: [])
    }
}

extension GuardSelection {
    /// This selection's ranking of a diffusion base's tensors, as `permafrost guard learn` makes it:
    /// `learner`'s steps, seed and user rate serve every selection (attribution relearns for
    /// `learner.steps` steps at `learner.userLearningRate` on a copy from `copy`). `progress` gets the
    /// step and a line of losses.
    public func diffusionMask(model: UNet2DModel, copy: () throws -> UNet2DModel, restricted: LabeledImages, permitted: LabeledImages,
                              learner: GuardSettings, batchSize: Int, progress: (Int, String) -> Void = { _, _ in }) throws -> LearnedMask {
        switch self {
        case .learnt:
            return GuardLearner.learnDiffusionGuard(model: model, restricted: restricted, permitted: permitted, settings: learner, batchSize: batchSize) { p in
                progress(p.step, String(format: "L_restricted %.4f L_permitted %.4f frozen %.0f%%", p.restrictedLoss, p.permittedLoss, p.hardFreezeRatio * 100))
            }
        case .random:
            return Self.randomMask(names: model.namedParameters().map(\.name), seed: learner.seed)
        case .attribution:
            var settings = AttributionSettings()
            settings.relearnSteps = learner.steps; settings.learningRate = learner.userLearningRate; settings.batchSize = batchSize; settings.seed = learner.seed
            return try Self.attributionMask(model: try copy(), published: model, restricted: restricted, permitted: permitted, settings: settings) {
                progress($0, String(format: "L_restricted %.4f", $1))
            }
        }
    }
}
