import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// How a BERT classifier is fine-tuned on labelled sentences.
public struct TextFineTuneSettings: Sendable {
    public var epochs = 1
    public var batch = 32
    public var learningRate: Float = 5e-5
    public var weightDecay: Float = 0.01
    /// Tokens per sentence (special tokens included); batches are padded to their longest sentence.
    public var maxLength = 128
    public var seed: UInt64 = 0
    /// Globs of tensors kept frozen (a FreezePlan); the classifier head always trains.
    public var freeze: [String] = []
    /// Train the classifier head only.
    public var linearProbe = false
    /// SlimFit's freeze budget; nil trains every (unfrozen) tensor at every step.
    public var slimFitBudget: Double?
    public var activationCompression = ActivationCompression.none
    public var pooling = BertClassifier.Pooling.mean
    public init() {}
}

/// What a text fine-tune measured (keys as in its JSON report).
public struct TextFineTuneReport: Codable, Sendable {
    public var labels: [String]
    public var trainSentences: Int
    public var testSentences: Int
    public var steps: Int
    public var testAccuracy: Double
    public var medianStepSeconds: Double
    public var trainableParameters: Int
    public var peakTensorBytes: Int
    public var peakRSSMegabytes: Double
    public var scheduler: String
    public var freezeBudget: Double?
    public var linearProbe: Bool
    public var frozenPatterns: [String]
    public var activationCompression: Bool
    public var command: String?
    /// Accuracy on each label's test sentences.
    public var perLabelAccuracy: [String: Double] = [:]
    /// How many of the encoder's tensors a publisher's guard kept frozen (and proved unchanged).
    public var guardedTensors: Int?
    enum CodingKeys: String, CodingKey {
        case labels, trainSentences = "train_sentences", testSentences = "test_sentences", steps, testAccuracy = "test_accuracy"
        case medianStepSeconds = "median_step_seconds", trainableParameters = "trainable_parameters", peakTensorBytes = "peak_tensor_bytes"
        case peakRSSMegabytes = "peak_rss_mb", scheduler, freezeBudget = "freeze_budget", linearProbe = "linear_probe"
        case frozenPatterns = "frozen_patterns", activationCompression = "activation_compression", command
        case perLabelAccuracy = "per_label_accuracy", guardedTensors = "guarded_tensors"
    }
}

/// Fine-tunes a ``BertClassifier`` on ``LabeledTexts`` with AdamW (linear warm-up over 10% of the
/// steps, then linear decay to zero, as transformers' default schedule), optional frozen tensors,
/// linear probing, SlimFit and 8-bit activations.
public enum TextFineTune {
    public static func run(model: BertClassifier, tokenizer: WordPieceTokenizer, train: LabeledTexts, test: LabeledTexts, labels: [String],
                           settings: TextFineTuneSettings, progress: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> TextFineTuneReport {
        var tokenizer = tokenizer
        // Truncate where asked, and never beyond the positions the model has (its forward pass would refuse).
        (tokenizer.maxLength, tokenizer.padToLength) = (Swift.min(settings.maxLength, model.bert.config.maxPositions), nil)
        let index = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        func targets(_ set: LabeledTexts) throws -> [Int] {
            try set.labels.map { label in
                guard let i = index[label] else { throw ClassifierTrainingError.invalidSettings("label '\(label)' is not one of \(labels)") }
                return i
            }
        }
        let trainTargets = try targets(train), testTargets = try targets(test)
        if settings.linearProbe {
            try model.freeze(names: model.namedParameters().map(\.name).filter { !$0.hasPrefix("classifier.") })
        } else if !settings.freeze.isEmpty {
            try model.apply(FreezePlan.matching(settings.freeze, in: model))
        }
        let basePlan = model.freezePlan
        let freezer: FreezeScheduler? = try settings.slimFitBudget.map { budget in
            guard budget >= 0, budget < 1 else { throw ClassifierTrainingError.invalidSettings("the freeze budget must be in [0, 1), got \(budget)") }
            return SlimFitScheduler(budget: budget, alwaysTrained: Set(model.namedParameters().map(\.name).filter { $0.hasPrefix("classifier.") }))
        }
        let optimizer = Adam.adamW(learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        let perEpoch = train.count / settings.batch, total = settings.epochs * perEpoch
        let warmup = max(1, total / 10)
        var generator = PhiloxGenerator(seed: settings.seed)
        var times: [Double] = [], peak = 0, step = 0
        MemoryStatistics.returnFreeMemoryToSystem()
        for _ in 0..<settings.epochs {
            var order = Array(0..<train.count)
            order.shuffle(using: &generator)
            for b in 0..<perEpoch {
                let rows = Array(order[(b * settings.batch)..<((b + 1) * settings.batch)])
                let tokens = batch(rows.map { train.texts[$0] }, tokenizer: tokenizer)
                optimizer.learningRate = settings.learningRate * Float(step < warmup ? Double(step + 1) / Double(warmup) : Double(total - step) / Double(max(total - warmup, 1)))
                let start = Date()
                if let freezer { try model.applySchedule(UnionFreezeScheduler(freezer, plus: basePlan), step: step, optimizer: optimizer) }
                let result = try ActivationCompression.with(settings.activationCompression) {
                    try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model.logits(tokens), labels: rows.map { trainTargets[$0] }) }
                }
                if freezer != nil { try model.replaceFreezing(with: basePlan) }
                times.append(Date().timeIntervalSince(start))
                if step >= 10 { peak = max(peak, result.memory.peakBytes) }
                step += 1
                progress(step, total, result.loss)
            }
        }
        model.setTraining(false)
        defer { model.setTraining(true) }
        var correct = 0, labelCorrect = [Int](repeating: 0, count: labels.count), labelTotal = [Int](repeating: 0, count: labels.count)
        try GradientRecording.withoutRecording {
            for start in stride(from: 0, to: test.count, by: 64) {
                let rows = Array(start..<min(start + 64, test.count))
                let predicted = rowArgmax(model.logits(batch(rows.map { test.texts[$0] }, tokenizer: tokenizer)))
                for (guess, row) in zip(predicted, rows) {
                    labelTotal[testTargets[row]] += 1
                    if guess == testTargets[row] { correct += 1; labelCorrect[testTargets[row]] += 1 }
                }
            }
        }
        return TextFineTuneReport(labels: labels, trainSentences: train.count, testSentences: test.count, steps: total,
                                  testAccuracy: Double(correct) / Double(max(test.count, 1)), medianStepSeconds: median(Array(times.dropFirst(min(10, times.count / 2)))),
                                  trainableParameters: model.trainableParameters().reduce(0) { $0 + $1.parameter.value.count }, peakTensorBytes: peak,
                                  peakRSSMegabytes: MemoryStatistics.peakResidentMegabytes, scheduler: settings.slimFitBudget == nil ? "none" : "slimfit",
                                  freezeBudget: settings.slimFitBudget, linearProbe: settings.linearProbe, frozenPatterns: settings.freeze,
                                  activationCompression: settings.activationCompression != .none, command: nil,
                                  perLabelAccuracy: Dictionary(uniqueKeysWithValues: labels.indices.filter { labelTotal[$0] > 0 }
                                      .map { (labels[$0], Double(labelCorrect[$0]) / Double(labelTotal[$0])) }))
    }

    /// Sentences tokenised and padded to the longest of them.
    public static func batch(_ texts: [String], tokenizer: WordPieceTokenizer) -> TokenBatch {
        var encodings = texts.map { tokenizer.encode($0) }
        let length = encodings.map(\.inputIDs.count).max() ?? 2
        for i in encodings.indices {
            let pad = length - encodings[i].inputIDs.count
            encodings[i].inputIDs += [Int](repeating: tokenizer.paddingID, count: pad)
            encodings[i].attentionMask += [Int](repeating: 0, count: pad)
            encodings[i].tokenTypeIDs += [Int](repeating: 0, count: pad)
        }
        return TokenBatch(encodings)
    }
}
