import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN

/// A user's fine-tuning of a pretrained BERT with a publisher's guard enforced — the text twin of
/// ``GuardedFineTune``: the guard's signature and base digest must verify and the encoder's guarded
/// tensors must equal the publisher's digests before anything runs; they are enforced-frozen (no
/// gradient, no optimizer state, no way for a user plan or SlimFit to unfreeze them); afterwards
/// they are checked bit-identical again.
public struct GuardedTextFineTune {
    public var classifier: BertClassifier
    public var baseSHA256: String
    public var manifest: GuardManifest?

    /// Loads the BERT folder with a fresh head over `labels` and checks `manifest` against it.
    /// `acceptUnsigned` lets a publisher evaluate its own unsigned guard.
    public init(baseDirectory: URL, labels: [String], manifest: GuardManifest?, trustedPublisherKey: String? = nil, acceptUnsigned: Bool = false,
                seed: UInt64 = 0) throws {
        classifier = try BertClassifier(directory: baseDirectory, classes: labels.count, pooling: .mean, seed: seed)
        baseSHA256 = try sha256Hex(of: baseDirectory.appendingPathComponent("model.safetensors"))
        self.manifest = manifest
        guard let manifest else { return }
        do throws(GuardError) {
            if !(acceptUnsigned && manifest.signature == nil) { try manifest.verifySignature(trustedKey: trustedPublisherKey) }
            guard manifest.baseSHA256 == baseSHA256 else { throw .baseMismatch(expected: manifest.baseSHA256, actual: baseSHA256) }
            let changed = try manifest.changedTensors(in: classifier.bert)
            guard changed.isEmpty else { throw .tensorChanged(names: changed) }
        } catch { throw GuardedFineTuneError.guardRefused(error) }
        do throws(FreezeError) { try classifier.bert.apply(manifest.plan) } catch { throw GuardedFineTuneError.plan(error) }
    }

    /// Runs ``TextFineTune`` and proves the guard held: every guarded tensor's digest is the publisher's.
    public func run(tokenizer: WordPieceTokenizer, train: LabeledTexts, test: LabeledTexts, labels: [String], settings: TextFineTuneSettings,
                    progress: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> TextFineTuneReport {
        var report = try TextFineTune.run(model: classifier, tokenizer: tokenizer, train: train, test: test, labels: labels, settings: settings, progress: progress)
        if let manifest {
            let changed = try manifest.changedTensors(in: classifier.bert)
            guard changed.isEmpty else { throw GuardedFineTuneError.guardViolated(names: changed) }
            report.guardedTensors = manifest.frozen.count
        }
        return report
    }

    /// Writes the fine-tuned encoder as a BERT folder (`config.json`, `model.safetensors` with the base's
    /// tensor names, the tokenizer files) and the head as `classifier.safetensors`, so `guard verify
    /// --model` can check the result.
    public func save(to directory: URL, baseDirectory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = classifier.bert.namedParameters().map { (name: $0.name, tensor: $0.parameter.value) }
        try SafetensorsWriter.write(encoder, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
        let head = classifier.namedParameters().filter { !$0.name.hasPrefix("bert.") }.map { (name: $0.name, tensor: $0.parameter.value) }
        try SafetensorsWriter.write(head, metadata: ["format": "pt"], to: directory.appendingPathComponent("classifier.safetensors"))
        for file in ["config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
            let source = baseDirectory.appendingPathComponent(file), target = directory.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: source.path) else { continue }
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: source, to: target)
        }
    }
}
