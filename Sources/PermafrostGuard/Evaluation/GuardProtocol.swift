import PermafrostDiffusion
import PermafrostIO
import PermafrostModels
import PermafrostTensor

/// An evaluation protocol of `docs/PROTOCOLS.md`: which digits / Fashion classes are restricted and
/// permitted, and the class slots they are taught under.
public struct GuardProtocol: Sendable {
    public var name: String
    public var restrictedDigits: Set<Int>, restrictedFashion: Set<Int>
    public var permittedDigits: Set<Int>, permittedFashion: Set<Int>
    /// Unused slots a malicious user teaches the restricted content under.
    public static let maliciousSlots = [13, 14, 15]
    /// The protocols' names.
    public static let names = ["near", "far"]

    /// `near` (restricted digits 6, 7; permitted digits 8, 9 and Fashion) or `far` (restricted
    /// Fashion trouser/sneaker/bag; permitted digits 6–9); nil for any other name.
    public static func named(_ name: String) -> GuardProtocol? {
        switch name {
        case "near": return GuardProtocol(name: name, restrictedDigits: [6, 7], restrictedFashion: [], permittedDigits: [8, 9], permittedFashion: [1, 7, 8])
        case "far": return GuardProtocol(name: name, restrictedDigits: [], restrictedFashion: [1, 7, 8], permittedDigits: [6, 7, 8, 9], permittedFashion: [])
        default: return nil
        }
    }

    /// Guard learning uses the even-indexed training images; evaluation fine-tuning the odd ones,
    /// so the publisher's representative set never overlaps the user's data.
    public static func half(_ set: LabeledImages, publisher: Bool) -> LabeledImages {
        set.selecting(set.labels.indices.filter { ($0 % 2 == 0) == publisher })
    }

    public func restricted(_ data: ShippedData, split: String = "train") throws(DatasetError) -> LabeledImages {
        try data.load(split: split, digits: restrictedDigits, fashion: restrictedFashion)
    }

    public func permitted(_ data: ShippedData, split: String = "train") throws(DatasetError) -> LabeledImages {
        try data.load(split: split, digits: permittedDigits, fashion: permittedFashion)
    }

    /// The restricted images relabelled to the malicious slots (class k of the set → slot 13 + k).
    public static func maliciouslyRelabeled(_ set: LabeledImages) -> LabeledImages {
        let classes = Set(set.labels).sorted()
        return set.relabeled(Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($0.element, maliciousSlots[$0.offset % maliciousSlots.count]) }))
    }

    /// The publisher's learning sets: restricted images under their own and the malicious slots, and
    /// the permitted images, all from the publisher's half.
    public func learningSets(_ data: ShippedData) throws(DatasetError) -> (restricted: LabeledImages, permitted: LabeledImages) {
        let restricted = Self.half(try restricted(data), publisher: true)
        return (restricted + Self.maliciouslyRelabeled(restricted), Self.half(try permitted(data), publisher: true))
    }
}

extension GuardLearner {
    /// Learns a guard for a diffusion model: the restricted and permitted losses are the
    /// epsilon-prediction losses of `batchSize` images drawn by the Philox streams (`seed`, 2k) and
    /// (`seed`, 2k + 1) at learner step k.
    public static func learnDiffusionGuard(model: UNet2DModel, restricted: LabeledImages, permitted: LabeledImages, settings: GuardSettings,
                                           batchSize: Int, progress: (GuardProgress) -> Void = { _ in }) -> LearnedMask {
        let schedule = NoiseSchedule(), seed = settings.seed
        return GuardLearner(model: model, settings: settings).learn(
            restrictedLoss: { epsilonPredictionLoss(model, data: restricted, schedule: schedule, batchSize: batchSize, seed: seed, stream: UInt64(2 * $0)) },
            permittedLoss: { epsilonPredictionLoss(model, data: permitted, schedule: schedule, batchSize: batchSize, seed: seed, stream: UInt64(2 * $0 + 1)) },
            progress: progress)
    }
}

extension GuardProtocol {
    /// The digits the shipped base was pretrained on: what a lock must keep it drawing.
    public static let baseDigits: Set<Int> = Set(0...5)

    /// The restricted images under each label assignment an attacker may choose: their own slots,
    /// the unused slots 13–15, and the permitted slots (restricted content taught as permitted classes).
    public static func labelVariants(of restricted: LabeledImages, permittedSlots: [Int]) -> [LabeledImages] {
        let classes = Set(restricted.labels).sorted()
        var variants = [restricted, maliciouslyRelabeled(restricted)]
        if !permittedSlots.isEmpty {
            variants.append(restricted.relabeled(Dictionary(uniqueKeysWithValues: classes.enumerated().map {
                ($0.element, permittedSlots[$0.offset % permittedSlots.count])
            })))
        }
        return variants
    }

    /// The publisher's lock sets (even-indexed images): restricted under every label assignment,
    /// permitted, and the base's own digits to retain.
    public func lockSets(_ data: ShippedData) throws(DatasetError) -> (restricted: [LabeledImages], permitted: LabeledImages, retain: LabeledImages) {
        let restricted = Self.half(try restricted(data), publisher: true)
        let permitted = Self.half(try permitted(data), publisher: true)
        let permittedSlots = Set(permitted.labels).sorted()
        let retain = Self.half(try data.load(split: "train", digits: Self.baseDigits.subtracting(restrictedDigits).subtracting(permittedDigits)), publisher: true)
        return (Self.labelVariants(of: restricted, permittedSlots: permittedSlots), permitted, retain)
    }
}

/// How a distillation retain loss weighs its timesteps.
public enum RetainWeighting: Sendable, Equatable {
    /// Every timestep alike (the noise-prediction error as trained).
    case uniform
    /// By the error of the implied clean image, (1 − ᾱ)/ᾱ times the noise-prediction error, capped
    /// at `cap` and offset by 1, normalised to mean 1 over the timesteps. Why: at high noise the
    /// noise prediction is nearly the input itself, so its error is tiny while the clean image it
    /// implies — what decides a sample's class and layout — can be wholly wrong; uniform weighting
    /// lets a lock break exactly that.
    case cleanImage(cap: Float)

    func weights(_ schedule: NoiseSchedule) -> [Float] {
        switch self {
        case .uniform: return Array(repeating: 1, count: schedule.trainTimesteps)
        case let .cleanImage(cap):
            let raw = schedule.alphasCumulativeProduct.map { 1 + Swift.min((1 - $0) / Swift.max($0, 1e-12), cap) }
            let mean = raw.reduce(0, +) / Float(raw.count)
            return raw.map { $0 / mean }
        }
    }
}

extension LockTask {
    /// A lock task for a diffusion model: epsilon-prediction losses of `batchSize` images drawn by
    /// Philox streams of `seed`; `restricted[v]` is label assignment v.
    ///
    /// With a `teacher` (an unchanged copy of the base), the retain loss is distillation: the mean
    /// squared difference between the model's and the teacher's noise predictions on the retain
    /// batch. The denoising loss alone is a weak anchor — averaged over timesteps it hardly moves
    /// while a lock ruins sampling — whereas distillation is zero only where the base's behaviour is kept.
    public static func diffusion(model: UNet2DModel, restricted: [LabeledImages], permitted: LabeledImages, retain: LabeledImages,
                                 batchSize: Int, seed: UInt64, teacher: UNet2DModel? = nil, retainWeighting: RetainWeighting = .uniform) -> LockTask {
        let schedule = NoiseSchedule()
        let retainLoss: (UInt64) -> Tensor
        if let teacher {
            let weights = retainWeighting.weights(schedule)
            retainLoss = { stream in
                var generator = PhiloxGenerator(seed: seed, stream: stream)
                let batch = schedule.batch(of: retain, size: batchSize, generator: &generator)
                let timesteps = batch.timesteps.map(Float.init)
                let target = GradientRecording.withoutRecording { teacher(batch.noisy, timesteps: timesteps, classLabels: batch.labels) }
                let perImage = Tensor(shape: [batch.timesteps.count, 1, 1, 1], scalars: batch.timesteps.map { weights[$0] })
                return ((model(batch.noisy, timesteps: timesteps, classLabels: batch.labels) - target).squared() * perImage).mean()
            }
        } else {
            retainLoss = { epsilonPredictionLoss(model, data: retain, schedule: schedule, batchSize: batchSize, seed: seed, stream: $0) }
        }
        return LockTask(
            restricted: { stream, variant in
                epsilonPredictionLoss(model, data: restricted[variant % restricted.count], schedule: schedule, batchSize: batchSize, seed: seed, stream: stream)
            },
            permitted: { epsilonPredictionLoss(model, data: permitted, schedule: schedule, batchSize: batchSize, seed: seed, stream: $0) },
            retain: retainLoss)
    }
}
