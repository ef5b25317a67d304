import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// The text protocol: a guard on a pretrained BERT encoder against learning one label.
///
/// The user fine-tunes a fresh three-way head (fresh / rotten / plot) with the encoder. Restricted:
/// learning to recognise `plot` sentences (what the publisher does not want the model adapted to);
/// permitted: the sentiment labels. The publisher learns from the even-indexed training rows and the
/// user fine-tunes on the odd ones, as the image protocols split their data. Scores: recall on the
/// test split's `plot` sentences (restricted) and accuracy on its fresh / rotten sentences (permitted).
public struct TextGuardProtocol: Sendable {
    public static let name = "text"
    /// The head's classes, in order.
    public static let labels = ["fresh", "rotten", "plot"]
    public static let restrictedLabel = "plot"

    public var train: LabeledTexts
    public var test: LabeledTexts

    public init(train: LabeledTexts, test: LabeledTexts) throws(DatasetError) {
        for (name, set) in [("training", train), ("test", test)] {
            let present = Set(set.labels)
            guard Set(Self.labels).isSubset(of: present) else {
                throw .invalidTable("the \(name) sentences lack the labels \(Set(Self.labels).subtracting(present).sorted()); the text protocol needs \(Self.labels)")
            }
        }
        self.train = train; self.test = test
    }

    /// The shipped review snippets.
    public init(_ data: ShippedData) throws(DatasetError) {
        try self.init(train: try data.loadTexts(split: "train"), test: try data.loadTexts(split: "test"))
    }

    /// The publisher's (even-indexed) or the user's (odd-indexed) rows.
    public static func half(_ set: LabeledTexts, publisher: Bool) -> LabeledTexts {
        let rows = set.texts.indices.filter { ($0 % 2 == 0) == publisher }
        return LabeledTexts(texts: rows.map { set.texts[$0] }, labels: rows.map { set.labels[$0] })
    }

    static func rows(of set: LabeledTexts, where keep: (String) -> Bool) -> LabeledTexts {
        let rows = set.labels.indices.filter { keep(set.labels[$0]) }
        return LabeledTexts(texts: rows.map { set.texts[$0] }, labels: rows.map { set.labels[$0] })
    }

    /// Cross-entropy losses of `model` on the publisher's restricted (`plot`) and permitted (sentiment)
    /// sentences, `batchSize` drawn per call by the step's Philox stream.
    public func learningLosses(model: BertClassifier, tokenizer: WordPieceTokenizer, batchSize: Int = 16, seed: UInt64 = 0)
        -> (restricted: (Int) -> Tensor, permitted: (Int) -> Tensor) {
        let publisher = Self.half(train, publisher: true)
        let restricted = Self.rows(of: publisher) { $0 == Self.restrictedLabel }
        let permitted = Self.rows(of: publisher) { $0 != Self.restrictedLabel && Self.labels.contains($0) }
        var tokenizer = tokenizer
        // The fine-tunes' truncation, never beyond the positions the model has.
        (tokenizer.maxLength, tokenizer.padToLength) = (Swift.min(128, model.bert.config.maxPositions), nil)
        let index = Dictionary(uniqueKeysWithValues: Self.labels.enumerated().map { ($1, $0) })
        func loss(_ set: LabeledTexts, stream: UInt64) -> Tensor {
            var generator = PhiloxGenerator(seed: seed, stream: stream)
            let rows = (0..<batchSize).map { _ in Int(generator.nextUInt32() % UInt32(set.count)) }
            let tokens = TextFineTune.batch(rows.map { set.texts[$0] }, tokenizer: tokenizer)
            return crossEntropy(logits: model.logits(tokens), labels: rows.map { index[set.labels[$0]]! })
        }
        return ({ loss(restricted, stream: UInt64($0) &* 2) }, { loss(permitted, stream: UInt64($0) &* 2 &+ 1) })
    }

    /// Learns which of the encoder's tensors to freeze (the head is the user's, never guarded): the
    /// bilevel mask over every tensor, then the ranking of the encoder's tensors cut without passing
    /// the ratio (of parameters when `settings.weightByParameters`; ``LearnedMask/frozen(atMost:sizes:)``).
    /// `random` ranks by a seeded draw instead.
    public func learnGuard(model: BertClassifier, tokenizer: WordPieceTokenizer, selection: GuardSelection, settings: GuardSettings,
                           batchSize: Int = 16, progress: (GuardProgress) -> Void = { _ in }) throws -> (frozen: Set<String>, mask: LearnedMask) {
        let encoderNames = model.bert.namedParameters().map(\.name)
        let mask: LearnedMask
        switch selection {
        case .learnt:
            let losses = learningLosses(model: model, tokenizer: tokenizer, batchSize: batchSize, seed: settings.seed)
            let learnt = GuardLearner(model: model, settings: settings).learn(restrictedLoss: losses.restricted, permittedLoss: losses.permitted, progress: progress)
            // The learner names the classifier's tensors (`bert.…`); the guard names the encoder's, as its weights file does.
            let scores = Dictionary(uniqueKeysWithValues: zip(learnt.names, learnt.softMask))
            mask = LearnedMask(names: encoderNames, softMask: encoderNames.map { scores["bert." + $0] ?? 0 }, trace: learnt.trace)
        case .random:
            mask = GuardSelection.randomMask(names: encoderNames, seed: settings.seed)
        case .attribution:
            throw GuardLearningError.unsupportedSelection("attribution is measured for the diffusion protocols; the text protocol takes learnt or random")
        }
        let sizes = Dictionary(uniqueKeysWithValues: model.bert.namedParameters().map { ($0.name, settings.weightByParameters ? $0.parameter.value.count : 1) })
        return (mask.frozen(atMost: Double(settings.freezeRatio), sizes: sizes), mask)
    }
}

/// Why a guard cannot be learnt as asked.
public enum GuardLearningError: Error, Equatable, CustomStringConvertible {
    case unsupportedSelection(String)

    public var description: String {
        switch self {
        case let .unsupportedSelection(reason): return reason
        }
    }
}
