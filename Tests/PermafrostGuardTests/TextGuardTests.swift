import Crypto
import Foundation
import XCTest
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Guards on a BERT: the model family is read from the folder, the text protocol's guard covers the
/// encoder's tensors only (the head is the user's), and a guarded text fine-tune keeps every guarded
/// tensor bit-identical while the rest learns.
final class TextGuardTests: XCTestCase {
    static let words = ["good", "great", "fine", "fun", "bad", "awful", "poor", "dull", "story", "man", "woman", "city", "war", "love",
                        "the", "a", "of", "is", "film", "movie"]

    /// A tiny random BERT folder (config.json, model.safetensors, vocab.txt) in a fresh temporary folder.
    func tinyBert() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-tiny-bert-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let config: [String: Any] = ["model_type": "bert", "vocab_size": 32, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                     "intermediate_size": 24, "max_position_embeddings": 32, "type_vocab_size": 2, "hidden_act": "gelu",
                                     "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0]
        let configData = try JSONSerialization.data(withJSONObject: config)
        try configData.write(to: folder.appendingPathComponent("config.json"))
        let model = BertModel(config: try BertConfig(json: configData), seed: 3)
        try SafetensorsWriter.write(model.namedParameters().map { (name: $0.name, tensor: $0.parameter.value) }, metadata: [:],
                                    to: folder.appendingPathComponent("model.safetensors"))
        let vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + Self.words + (0..<(32 - 5 - Self.words.count)).map { "w\($0)" }
        try vocabulary.joined(separator: "\n").write(to: folder.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    /// Sentences whose label a model can learn from their words: sentiment words, or story words.
    func sentences(count: Int, seed: UInt64) -> LabeledTexts {
        var g = PhiloxGenerator(seed: seed)
        let pools = ["fresh": ["good", "great", "fine", "fun"], "rotten": ["bad", "awful", "poor", "dull"], "plot": ["story", "man", "woman", "city", "war", "love"]]
        var texts: [String] = [], labels: [String] = []
        for i in 0..<count {
            let label = ["fresh", "rotten", "plot"][i % 3]
            let pool = pools[label]!
            let words = (0..<4).map { _ in pool[Int(g.nextUInt32() % UInt32(pool.count))] } + ["the", "film"]
            texts.append(words.joined(separator: " ")); labels.append(label)
        }
        return LabeledTexts(texts: texts, labels: labels)
    }

    func testModelFamilyIsReadFromTheFolder() throws {
        XCTAssertEqual(try ModelFamily(path: try tinyBert().path), .bert)
        XCTAssertEqual(try ModelFamily(path: try tinyBert().appendingPathComponent("model.safetensors").path), .unet, "a bare weights file is a UNet checkpoint")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-family-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        XCTAssertThrowsError(try ModelFamily(path: folder.path)) { XCTAssertTrue("\($0)".contains("config.json"), "\($0)") }
        try Data(#"{"_class_name": "UNet2DModel"}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        XCTAssertEqual(try ModelFamily(path: folder.path), .unet)
        XCTAssertEqual(ModelFamily.bert.weightsURL(folder.path).lastPathComponent, "model.safetensors")
        try Data(#"{"model_type": "gpt2"}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try ModelFamily(path: folder.path)) { XCTAssertTrue("\($0)".contains("gpt2"), "\($0)") }
    }

    func testTextGuardCoversTheEncoderOnlyAtTheRatio() throws {
        let folder = try tinyBert()
        let textProtocol = try TextGuardProtocol(train: sentences(count: 60, seed: 1), test: sentences(count: 30, seed: 2))
        let model = try BertClassifier(directory: folder, classes: 3)
        var settings = GuardSettings()
        settings.steps = 10; settings.userInterval = 2; settings.freezeRatio = 0.5; settings.weightByParameters = true; settings.userLearningRate = 1e-3
        let tokenizer = try WordPieceTokenizer(directory: folder)
        let (frozen, mask) = try textProtocol.learnGuard(model: model, tokenizer: tokenizer, selection: .learnt, settings: settings, batchSize: 8)
        let encoder = Set(model.bert.namedParameters().map(\.name))
        XCTAssertEqual(Set(mask.names), encoder, "the mask ranks the encoder's tensors under the weights file's names")
        XCTAssertFalse(frozen.isEmpty)
        XCTAssertTrue(frozen.isSubset(of: encoder), "\(frozen.subtracting(encoder))")
        let manifest = try GuardManifest(model: model.bert, frozen: frozen, baseSHA256: try sha256Hex(of: folder.appendingPathComponent("model.safetensors")), settings: [:])
        XCTAssertLessThanOrEqual(manifest.freezeRatioParameters, 0.5)
        XCTAssertGreaterThan(manifest.freezeRatioParameters, 0.3, "the cut fills the ratio with the smaller tensors it skips to")
        XCTAssertThrowsError(try textProtocol.learnGuard(model: model, tokenizer: tokenizer, selection: .attribution, settings: settings))
        XCTAssertThrowsError(try TextGuardProtocol(train: LabeledTexts(texts: ["a"], labels: ["fresh"]), test: sentences(count: 3, seed: 1))) {
            XCTAssertTrue("\($0)".contains("plot"), "\($0)")
        }
    }

    func testRankingCutWithoutPassingTheRatioSkipsATensorThatWouldOvershoot() {
        let mask = LearnedMask(names: ["a", "big", "c", "d"], softMask: [0.9, 0.8, 0.7, 0.6], trace: [])
        let sizes = ["a": 10, "big": 60, "c": 20, "d": 10]
        XCTAssertEqual(mask.frozen(atMost: 0.5, sizes: sizes), ["a", "c", "d"])
        XCTAssertEqual(mask.frozen(ratio: 0.5, sizes: sizes), ["a", "big"], "the image protocols' cut passes the ratio at the tensor that reaches it")
        XCTAssertEqual(mask.frozen(atMost: 0.05, sizes: sizes), [])
    }

    func testGuardedTextFineTuneKeepsTheGuardedTensorsAndTheSavedModelVerifies() throws {
        let folder = try tinyBert()
        let key = Curve25519.Signing.PrivateKey()
        let base = try BertModel(directory: folder)
        let frozen: Set<String> = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.weight"]
        var manifest = try GuardManifest(model: base, frozen: frozen, baseSHA256: try sha256Hex(of: folder.appendingPathComponent("model.safetensors")), settings: [:])
        try manifest.sign(with: key)
        let labels = TextGuardProtocol.labels
        let run = try GuardedTextFineTune(baseDirectory: folder, labels: labels, manifest: manifest,
                                          trustedPublisherKey: key.publicKey.rawRepresentation.base64EncodedString())
        var settings = TextFineTuneSettings()
        settings.batch = 8; settings.learningRate = 1e-2
        let report = try run.run(tokenizer: try WordPieceTokenizer(directory: folder), train: sentences(count: 48, seed: 1), test: sentences(count: 24, seed: 2),
                                 labels: labels, settings: settings)
        XCTAssertEqual(report.guardedTensors, 3)
        XCTAssertEqual(Set(report.perLabelAccuracy.keys), Set(labels))
        let after = Dictionary(uniqueKeysWithValues: run.classifier.bert.namedParameters().map { ($0.name, $0.parameter.value.scalars) })
        for (name, parameter) in base.namedParameters() {
            if frozen.contains(name) { XCTAssertEqual(after[name], parameter.value.scalars, "\(name) is guarded") }
        }
        XCTAssertNotEqual(after["encoder.layer.0.attention.self.key.weight"], base.parameter(named: "encoder.layer.0.attention.self.key.weight")?.value.scalars)
        let output = folder.appendingPathComponent("fine-tuned")
        try run.save(to: output, baseDirectory: folder)
        XCTAssertEqual(try manifest.changedTensors(in: try SafetensorsFile(contentsOf: output.appendingPathComponent("model.safetensors"))), [])
        XCTAssertNoThrow(try BertClassifier(directory: output, classes: 3), "the saved encoder is a BERT folder")
    }

    func testGuardedTextFineTuneRefusesAForeignOrUnsignedGuard() throws {
        let folder = try tinyBert()
        let base = try BertModel(directory: folder)
        let key = Curve25519.Signing.PrivateKey()
        var foreign = try GuardManifest(model: base, frozen: ["embeddings.word_embeddings.weight"], baseSHA256: String(repeating: "0", count: 64), settings: [:])
        try foreign.sign(with: key)
        XCTAssertThrowsError(try GuardedTextFineTune(baseDirectory: folder, labels: ["a", "b"], manifest: foreign)) { error in
            XCTAssertTrue("\(error)".contains("base"), "\(error)")
        }
        let unsigned = try GuardManifest(model: base, frozen: ["embeddings.word_embeddings.weight"],
                                         baseSHA256: try sha256Hex(of: folder.appendingPathComponent("model.safetensors")), settings: [:])
        XCTAssertThrowsError(try GuardedTextFineTune(baseDirectory: folder, labels: ["a", "b"], manifest: unsigned))
        XCTAssertNoThrow(try GuardedTextFineTune(baseDirectory: folder, labels: ["a", "b"], manifest: unsigned, acceptUnsigned: true))
    }
}
