import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Calls `body(step, images, labels)` for every full batch of `epochs` shuffled passes over `data`
/// (pixels in −1…1), the order drawn from a Philox generator seeded with `seed`.
public func forEachShuffledBatch<Source: LabeledImageSource>(of data: Source, batch: Int, epochs: Int, seed: UInt64,
                                                             _ body: (Int, Tensor, [Int]) throws -> Void) throws {
    var generator = PhiloxGenerator(seed: seed)
    var step = 0
    for _ in 0..<epochs {
        var order = Array(0..<data.count)
        order.shuffle(using: &generator)
        for b in 0..<(data.count / batch) {
            let indices = Array(order[(b * batch)..<((b + 1) * batch)])
            try body(step, try data.batch(indices, range: -1...1), indices.map { data.labels[$0] })
            step += 1
        }
    }
}

/// The index of the largest value in each row of `logits` (`[rows, classes]`).
public func rowArgmax(_ logits: Tensor) -> [Int] {
    let classes = logits.shape.last ?? 1
    return logits.withUnsafeBufferPointer { p in
        (0..<(p.count / classes)).map { row in
            let values = p[(row * classes)..<((row + 1) * classes)]
            return values.indices.max { values[$0] < values[$1] }! - row * classes
        }
    }
}

/// The share of `data` whose label is the argmax of `logits` (a model's forward pass on images in
/// −1…1), evaluated `batch` images at a time without a tape.
public func classificationAccuracy(on data: LabeledImages, batch: Int = 1000, _ logits: (Tensor) -> Tensor) throws -> Double {
    var correct = 0
    for start in stride(from: 0, to: data.count, by: batch) {
        let indices = Array(start..<min(start + batch, data.count))
        let images = try data.batch(indices, range: -1...1)
        let predicted = rowArgmax(GradientRecording.withoutRecording { logits(images) })
        correct += zip(predicted, indices).filter { $0 == data.labels[$1] }.count
    }
    return Double(correct) / Double(max(data.count, 1))
}

/// Why a classifier could not be trained or grown.
public enum ClassifierTrainingError: Error, CustomStringConvertible {
    case notADigitsClassifier(classes: Int)
    case missingTensor(String)
    case invalidSettings(String)

    public var description: String {
        switch self {
        case let .notADigitsClassifier(classes): return "the source must be a 10-class digits classifier, this one has \(classes) classes"
        case let .missingTensor(name): return "the checkpoint has no tensor '\(name)' (is it an ImageClassifier?)"
        case let .invalidSettings(reason): return reason
        }
    }
}

extension ImageClassifier {
    /// Trains with Adam and a cosine schedule (50 warm-up steps, down to a fiftieth of the rate);
    /// `progress` gets each step and the mean loss of the last 50.
    public func train<Source: LabeledImageSource>(on data: Source, epochs: Int, batch: Int, learningRate: Float, seed: UInt64,
                                                  progress: (Int, Float) -> Void = { _, _ in }) throws {
        let optimizer = Adam(learningRate: learningRate)
        let total = epochs * (data.count / batch)
        var recent: [Float] = []
        try forEachShuffledBatch(of: data, batch: batch, epochs: epochs, seed: seed) { step, images, labels in
            optimizer.learningRate = LearningRateSchedule.cosine(peak: learningRate, minimum: learningRate / 50, warmupSteps: 50, totalSteps: total).rate(atStep: step)
            let result = try trainingStep(optimizer: optimizer) { crossEntropy(logits: logits(images), labels: labels) }
            recent.append(result.loss)
            if recent.count > 50 { recent.removeFirst() }
            progress(step + 1, recent.reduce(0, +) / Float(recent.count))
        }
    }

    /// A 13-class model (digits + Fashion slots 10–12) initialised from a 10-class checkpoint: the
    /// digit rows of the head are kept, the three new rows start at zero. The source model goes out
    /// of scope here: held through training, its 1.9 MB of weights would count in every step's peak.
    public static func grown(from url: URL, seed: UInt64) throws -> ImageClassifier {
        let source = try ImageClassifier.load(from: url)
        guard source.classes == 10 else { throw ClassifierTrainingError.notADigitsClassifier(classes: source.classes) }
        let model = ImageClassifier(classes: 13, seed: seed)
        for (name, parameter) in model.namedParameters() {
            guard let old = source.parameter(named: name)?.value else { throw ClassifierTrainingError.missingTensor(name) }
            if old.shape == parameter.shape { parameter.value = old; continue }
            var grown = Tensor.zeros(parameter.shape)
            let count = old.count
            old.withUnsafeBufferPointer { o in grown.withUnsafeMutableBufferPointer { g in for i in 0..<count { g[i] = o[i] } } }
            parameter.value = grown
        }
        return model
    }
}

/// Settings of SlimFit's classifier experiment (a digits classifier adapted to digits + 3 Fashion classes).
public struct ClassifierFineTuneSettings: Sendable {
    public var epochs = 1
    public var batch = 64
    public var learningRate: Float = 5e-4
    public var seed: UInt64 = 0
    /// SlimFit's freeze budget; nil trains every tensor at every step.
    public var slimFitBudget: Double?
    /// Let SlimFit freeze the new head too (by default it always trains, as in SlimFit's reference code).
    public var freezeHead = false
    public var activationCompression = ActivationCompression.none
    public init() {}
}

/// What the classifier experiment measured (keys as in the JSON report).
public struct ClassifierFineTuneReport: Codable, Sendable {
    public var scheduler: String
    public var freezeBudget: Double
    public var compressActivations: Bool
    public var compressWeightInputs: Bool
    public var headFrozenBySlimfit: Bool
    public var epochs: Int
    public var steps: Int
    public var batch: Int
    public var testAccuracy: Double
    public var testImages: Int
    /// Median step time after the first 10 steps.
    public var medianStepSeconds: Double
    public var meanFrozenParameterShare: Double
    /// Steady-state (after the first 10 steps) tensor peaks, by kind.
    public var peakTensorBytes: Int
    public var activationBytes: Int
    public var gradientBytes: Int
    public var optimizerStateBytes: Int
    public var peakRSSMegabytes: Double
    public var peakRSSBeforeTrainingMegabytes: Double
    public var command: String?

    enum CodingKeys: String, CodingKey {
        case scheduler, freezeBudget = "freeze_budget", compressActivations = "compress_activations", compressWeightInputs = "compress_weight_inputs"
        case headFrozenBySlimfit = "head_frozen_by_slimfit", epochs, steps, batch, testAccuracy = "test_accuracy", testImages = "test_images"
        case medianStepSeconds = "median_step_seconds", meanFrozenParameterShare = "mean_frozen_parameter_share"
        case peakTensorBytes = "peak_tensor_bytes", activationBytes = "activation_bytes", gradientBytes = "gradient_bytes"
        case optimizerStateBytes = "optimizer_state_bytes", peakRSSMegabytes = "peak_rss_mb"
        case peakRSSBeforeTrainingMegabytes = "peak_rss_before_training_mb", command
    }
}

extension ClassifierFineTuneReport: CustomStringConvertible {
    /// One line: accuracy, median step, steady-state tensor peaks by kind, peak RSS.
    public var description: String {
        String(format: "test accuracy %.2f%% (13 classes); median step %.2f ms; peak tensors %.1f MiB (activations %.1f, gradients %.2f, optimizer %.2f); peak RSS %.0f MiB",
               testAccuracy * 100, medianStepSeconds * 1000, Double(peakTensorBytes) / 1_048_576, Double(activationBytes) / 1_048_576,
               Double(gradientBytes) / 1_048_576, Double(optimizerStateBytes) / 1_048_576, peakRSSMegabytes)
    }
}

extension ImageClassifier {
    /// SlimFit's classifier experiment: fine-tunes this model on `train` (fully, or with SlimFit and
    /// 8-bit activations) and measures accuracy on `test`, step time and memory.
    public func fineTune<Train: LabeledImageSource, Test: LabeledImageSource>(
        on train: Train, testingOn test: Test, settings: ClassifierFineTuneSettings,
        progress: (Int, Int, Float) -> Void = { _, _, _ in }
    ) throws -> ClassifierFineTuneReport {
        let freezer: FreezeScheduler?
        if let budget = settings.slimFitBudget {
            guard budget >= 0, budget < 1 else { throw ClassifierTrainingError.invalidSettings("the freeze budget must be in [0, 1), got \(budget)") }
            let head = Set(namedParameters().map(\.name).filter { $0.hasPrefix("head.") })
            freezer = SlimFitScheduler(budget: budget, alwaysTrained: settings.freezeHead ? [] : head)
        } else {
            freezer = nil
        }
        let optimizer = Adam(learningRate: settings.learningRate)
        let total = settings.epochs * (train.count / settings.batch)
        MemoryStatistics.returnFreeMemoryToSystem()
        let loadingRSS = MemoryStatistics.peakResidentMegabytes
        var times: [Double] = [], peak = 0, activations = 0, gradients = 0, state = 0, frozenShare: [Double] = []
        let parameterTotal = Double(parameterCount)
        try forEachShuffledBatch(of: train, batch: settings.batch, epochs: settings.epochs, seed: settings.seed) { step, images, labels in
            optimizer.learningRate = LearningRateSchedule.cosine(peak: settings.learningRate, minimum: settings.learningRate / 20,
                                                                 warmupSteps: 20, totalSteps: total).rate(atStep: step)
            let start = Date()
            if let freezer { try applySchedule(freezer, step: step, optimizer: optimizer) }
            let result = try ActivationCompression.with(settings.activationCompression) {
                try trainingStep(optimizer: optimizer) { crossEntropy(logits: logits(images), labels: labels) }
            }
            times.append(Date().timeIntervalSince(start))
            // The first steps train everything (SlimFit's scores start high); the steady state is what a run pays.
            if step >= 10 {
                peak = max(peak, result.memory.peakBytes); activations = max(activations, result.memory.activationBytes)
                gradients = max(gradients, result.memory.gradientBytes); state = max(state, result.memory.optimizerStateBytes)
            }
            frozenShare.append(Double(frozenParameters().reduce(0) { $0 + $1.parameter.value.count }) / parameterTotal)
            progress(step + 1, total, result.loss)
        }
        let accuracy = try self.accuracy(on: test)
        return ClassifierFineTuneReport(
            scheduler: settings.slimFitBudget == nil ? "none" : "slimfit", freezeBudget: settings.slimFitBudget ?? 0,
            compressActivations: settings.activationCompression != .none, compressWeightInputs: settings.activationCompression == .int8WithWeightInputs,
            headFrozenBySlimfit: settings.freezeHead, epochs: settings.epochs, steps: total, batch: settings.batch,
            testAccuracy: accuracy, testImages: test.count, medianStepSeconds: median(Array(times.dropFirst(10))),
            meanFrozenParameterShare: frozenShare.reduce(0, +) / Double(max(frozenShare.count, 1)),
            peakTensorBytes: peak, activationBytes: activations, gradientBytes: gradients, optimizerStateBytes: state,
            peakRSSMegabytes: MemoryStatistics.peakResidentMegabytes, peakRSSBeforeTrainingMegabytes: loadingRSS)
    }
}
