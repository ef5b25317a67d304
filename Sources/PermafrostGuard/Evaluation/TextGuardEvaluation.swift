import Foundation
import PermafrostIO
import PermafrostModels

/// The text protocol's evaluation (``TextGuardProtocol``): at each freeze ratio a learnt guard and a
/// seeded random mask of the same share of parameters; each, and full fine-tuning, is the user's
/// fine-tune on the user's half of the training sentences (all three labels, the same recipe); then
/// plot recall (restricted) and sentiment accuracy (permitted) on the test split.
public struct TextGuardEvaluation {
    public struct Row: Codable, Sendable, Equatable {
        public var method: String
        /// Share of the encoder's parameters the method froze (0 for full fine-tuning).
        public var frozenParameters: Double
        /// Recall on the test `plot` sentences after the user's fine-tune.
        public var restricted: Double
        /// Accuracy on the test fresh / rotten sentences after the user's fine-tune.
        public var permitted: Double
        public var testAccuracy: Double
        public var seconds: Double

        enum CodingKeys: String, CodingKey {
            case method, frozenParameters = "freeze_ratio_params", restricted = "restricted_recall", permitted = "permitted_accuracy"
            case testAccuracy = "test_accuracy", seconds
        }
    }

    public struct Report: Codable, Sendable {
        public var `protocol` = TextGuardProtocol.name
        public var model: String
        public var command: String?
        public var settings: [String: String]
        public var rows: [Row]
        public var wallSeconds: Double

        enum CodingKeys: String, CodingKey { case `protocol`, model, command, settings, rows, wallSeconds = "wall_seconds" }

        /// The image protocols' goal lines in this protocol's terms, one per guarded row.
        public var goalLines: [String] {
            guard let full = rows.first(where: { $0.method == "full" }) else { return ["no full fine-tuning row: nothing to compare with"] }
            return rows.filter { $0.method != "full" }.flatMap { row -> [String] in
                let label = "\(row.method) (\(String(format: "%.0f", row.frozenParameters * 100))% of parameters)"
                let ratio = full.restricted > 0 ? row.restricted / full.restricted : .infinity
                let gap = (row.permitted - full.permitted) * 100
                return [
                    String(format: "restricted ≤ 0.3× full: %@ %.1f%% vs full %.1f%% = %.2f× — %@", label, row.restricted * 100, full.restricted * 100, ratio, ratio <= 0.3 ? "met" : "NOT met"),
                    String(format: "permitted within 5 points of full: %@ %.1f%% vs full %.1f%% = %+.1f points — %@", label, row.permitted * 100, full.permitted * 100, gap, gap >= -5 ? "met" : "NOT met"),
                ]
            }
        }

        public var markdown: String {
            var lines = ["| method | frozen (parameters) | plot recall (restricted) | sentiment accuracy (permitted) | test accuracy | seconds |",
                         "| --- | --- | --- | --- | --- | --- |"]
            for row in rows {
                lines.append(String(format: "| %@ | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.0f |", row.method, row.frozenParameters * 100,
                                    row.restricted * 100, row.permitted * 100, row.testAccuracy * 100, row.seconds))
            }
            return (lines + [""] + goalLines.map { "- " + $0 }).joined(separator: "\n")
        }
    }

    public var baseDirectory: URL
    public var textProtocol: TextGuardProtocol
    public var ratios: [Double] = [0.5]
    public var methods: Set<String> = ["full", "guard", "random"]
    public var fineTune = TextFineTuneSettings()
    public var learner = GuardSettings()

    public init(baseDirectory: URL, textProtocol: TextGuardProtocol) {
        self.baseDirectory = baseDirectory; self.textProtocol = textProtocol
        learner.steps = 100; learner.userLearningRate = 5e-5; learner.weightByParameters = true
    }

    /// Runs every method; `saveGuard(method, ratio, manifest)` keeps each selection's guard (e.g. signed, on disk).
    public func run(log: (String) -> Void = { _ in }, guardProgress: (GuardProgress) -> Void = { _ in },
                    fineTuneProgress: (_ step: Int, _ total: Int, _ loss: Float) -> Void = { _, _, _ in },
                    saveGuard: (_ method: String, _ ratio: Double, GuardManifest) throws -> Void = { _, _, _ in }) throws -> Report {
        let started = Date()
        let tokenizer = try WordPieceTokenizer(directory: baseDirectory)
        let digest = try sha256Hex(of: baseDirectory.appendingPathComponent("model.safetensors"))
        let user = TextGuardProtocol.half(textProtocol.train, publisher: false)
        var rows: [Row] = []
        func userFineTune(_ method: String, manifest: GuardManifest?) throws {
            log("fine-tuning: \(method)")
            let start = Date()
            let run = try GuardedTextFineTune(baseDirectory: baseDirectory, labels: TextGuardProtocol.labels, manifest: manifest, acceptUnsigned: true, seed: fineTune.seed)
            let report = try run.run(tokenizer: tokenizer, train: user, test: textProtocol.test, labels: TextGuardProtocol.labels, settings: fineTune,
                                     progress: fineTuneProgress)
            let sentiment = TextGuardProtocol.labels.filter { $0 != TextGuardProtocol.restrictedLabel }
            var correct = 0.0, total = 0.0
            for label in sentiment {
                let count = Double(textProtocol.test.labels.filter { $0 == label }.count)
                correct += (report.perLabelAccuracy[label] ?? 0) * count
                total += count
            }
            let permitted = correct / max(total, 1)
            rows.append(Row(method: method, frozenParameters: manifest?.freezeRatioParameters ?? 0,
                            restricted: report.perLabelAccuracy[TextGuardProtocol.restrictedLabel] ?? 0, permitted: permitted,
                            testAccuracy: report.testAccuracy, seconds: Date().timeIntervalSince(start)))
        }
        if methods.contains("full") { try userFineTune("full", manifest: nil) }
        for ratio in ratios {
            var settings = learner
            settings.freezeRatio = Float(ratio)
            for (method, selection) in [("guard", GuardSelection.learnt), ("random", .random)] where methods.contains(method) {
                log("selecting: \(method) at \(Int(ratio * 100))% of parameters")
                let model = try BertClassifier(directory: baseDirectory, classes: TextGuardProtocol.labels.count, seed: learner.seed)
                let (frozen, _) = try textProtocol.learnGuard(model: model, tokenizer: tokenizer, selection: selection, settings: settings, progress: guardProgress)
                let fields = (selection == .learnt ? settings.dictionary : ["seed": "\(settings.seed)"])
                    .merging(["protocol": TextGuardProtocol.name, "family": ModelFamily.bert.rawValue, "selection": "\(selection.rawValue), ranking cut without passing the ratio"]) { $1 }
                let manifest = try GuardManifest(model: model.bert, frozen: frozen, baseSHA256: digest, settings: fields)
                try saveGuard(method, ratio, manifest)
                try userFineTune(method, manifest: manifest)
            }
        }
        var settings = ["user_epochs": "\(fineTune.epochs)", "user_batch": "\(fineTune.batch)", "user_lr": "\(fineTune.learningRate)",
                        "guard_steps": "\(learner.steps)", "ratios": ratios.map { "\($0)" }.joined(separator: ","),
                        "user_sentences": "\(user.count)", "test_sentences": "\(textProtocol.test.count)"]
        settings["seed"] = "\(fineTune.seed)"
        return Report(model: baseDirectory.lastPathComponent, command: nil, settings: settings, rows: rows, wallSeconds: Date().timeIntervalSince(started))
    }
}
