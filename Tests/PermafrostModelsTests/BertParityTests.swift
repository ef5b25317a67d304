import Foundation
import XCTest
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// A tiny random BERT from transformers (`Scripts/fixtures/bert_parity.py`): hidden states, pooled output
/// and logits on a padded batch with token types; weights after 5 AdamW steps with half the layers frozen.
final class BertParityTests: XCTestCase {
    func testTinyBertMatchesTransformers() throws {
        let folder = fixtureURL("bert_tiny")
        let config = try BertConfig(json: Data(contentsOf: folder.appendingPathComponent("config.json")))
        let model = BertClassifier(config: config, classes: 3, pooling: .cls)
        try model.load(contentsOf: folder.appendingPathComponent("model.safetensors"))
        let expected = try SafetensorsFile(contentsOf: folder.appendingPathComponent("expected.safetensors"))
        let ints = { (name: String) in try expected.int64s(named: name).map { Int($0) } }
        let tokens = TokenBatch(inputIDs: try ints("input_ids"), tokenTypeIDs: try ints("token_type_ids"), attentionMask: try ints("attention_mask"),
                                batch: 3, length: 10)
        let (hidden, pooled) = GradientRecording.withoutRecording { model.bert(tokens) }
        assertClose(hidden, try expected.tensor(named: "hidden"), tolerance: 1e-5, "last hidden state")
        assertClose(pooled, try expected.tensor(named: "pooled"), tolerance: 1e-5, "pooled output")
        assertClose(GradientRecording.withoutRecording { model.logits(tokens) }, try expected.tensor(named: "logits"), tolerance: 1e-5, "logits")

        let frozen = try XCTUnwrap(expected.metadata["frozen"]).split(separator: ",").map(String.init)
        try model.freeze(names: frozen)
        let before = Dictionary(uniqueKeysWithValues: model.stateDictionary().map { ($0.name, $0.tensor.scalars) })
        let labels = try ints("labels"), optimizer = Adam.adamW(learningRate: 1e-3, weightDecay: 0.01)
        for _ in 0..<5 { _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model.logits(tokens), labels: labels) } }
        // Within 1e-5 of transformers' Float64 weights, or 5× PyTorch's own Float32 distance from them.
        let tolerance = max(1e-5, 5 * (try XCTUnwrap(expected.metadata["torch_float32_weight_error"].flatMap(Float.init))))
        for (name, parameter) in model.namedParameters() {
            if name.hasSuffix("attention.self.key.bias") {
                // Its exact gradient is zero (softmax ignores a shift shared by a row's scores): Adam turns
                // rounding noise into steps of at most the rate, in either framework.
                for (a, b) in zip(parameter.value.scalars, before[name]!) { XCTAssertLessThanOrEqual(abs(a - b), 5.5e-3) }
                continue
            }
            assertClose(parameter.value, try expected.tensor(named: "trained.\(name)"), tolerance: tolerance, "\(name) after 5 AdamW steps")
            if frozen.contains(name) { XCTAssertEqual(parameter.value.scalars, before[name]!, "frozen \(name) must not move") }
        }
    }

    func testUnsupportedConfigValuesAreNamed() throws {
        let base = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL("bert_tiny/config.json"))) as! [String: Any]
        for (key, value) in [("hidden_act", "relu" as Any), ("position_embedding_type", "relative_key"), ("model_type", "roberta"),
                             ("num_attention_heads", 5), ("hidden_size", -1)] {
            var modified = base
            modified[key] = value
            XCTAssertThrowsError(try BertConfig(json: JSONSerialization.data(withJSONObject: modified)), key) { error in
                XCTAssert("\(error)".contains(key), "the error for \(key) must name it: \(error)")
            }
        }
        // A checkpoint without one of the model's tensors is refused, naming it.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("bert-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(contentsOf: fixtureURL("bert_tiny/config.json")).write(to: folder.appendingPathComponent("config.json"))
        let full = try SafetensorsFile(contentsOf: fixtureURL("bert_tiny/model.safetensors"))
        let kept = try full.names.filter { $0 != "bert.encoder.layer.1.output.dense.weight" }.map { (name: $0, tensor: try full.tensor(named: $0)) }
        try SafetensorsWriter.write(kept, to: folder.appendingPathComponent("model.safetensors"))
        XCTAssertThrowsError(try BertModel(directory: folder)) { error in
            XCTAssert("\(error)".contains("encoder.layer.1.output.dense.weight"), "the error must name the missing tensor: \(error)")
        }
        var missing = base
        missing["vocab_size"] = nil
        XCTAssertThrowsError(try BertConfig(json: JSONSerialization.data(withJSONObject: missing))) { error in XCTAssert("\(error)".contains("vocab_size")) }
    }
}

/// Element-wise |a − e| ≤ tolerance · max(|e|, 0.1·max|E|), as in the NN parity tests.
func assertClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, message, file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let scale = expected.scalars.map { abs($0) }.max() ?? 0
    for (i, (a, e)) in zip(actual.scalars, expected.scalars).enumerated() where !(abs(a - e) / max(abs(e), 0.1 * scale, 1e-30) <= tolerance) {
        XCTFail("\(message): element \(i) is \(a), expected \(e)", file: file, line: line)
        return
    }
}

/// The real all-MiniLM-L6-v2 (`Scripts/get-model minilm`; skipped without it): mean-pooled embeddings of
/// 100 shipped test snippets against sentence-transformers' (`Scripts/fixtures/minilm_embeddings.py`).
final class MiniLMTests: XCTestCase {
    func testMeanPooledEmbeddingsMatchSentenceTransformers() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let folder = root.appendingPathComponent("Models/all-MiniLM-L6-v2")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path),
                          "Models/all-MiniLM-L6-v2 is absent (Scripts/get-model minilm)")
        let model = try BertModel(directory: folder)
        model.setTraining(false)
        var tokenizer = try WordPieceTokenizer(directory: folder)
        let expectedFile = try SafetensorsFile(contentsOf: fixtureURL("text/minilm_embeddings.safetensors"))
        tokenizer.maxLength = Int(expectedFile.metadata["max_seq_length"] ?? "256")
        tokenizer.padToLength = nil
        let expected = try expectedFile.tensor(named: "embeddings").scalars
        let texts = Array(try ShippedData.locate(nil).loadTexts(split: "test").texts.prefix(100))
        var worst = 1.0
        for start in stride(from: 0, to: texts.count, by: 10) {
            var encodings = texts[start..<min(start + 10, texts.count)].map { tokenizer.encode($0) }
            let length = encodings.map(\.inputIDs.count).max()!
            for i in encodings.indices {
                let pad = length - encodings[i].inputIDs.count
                encodings[i].inputIDs += [Int](repeating: 0, count: pad)
                encodings[i].attentionMask += [Int](repeating: 0, count: pad)
                encodings[i].tokenTypeIDs += [Int](repeating: 0, count: pad)
            }
            let pooled = GradientRecording.withoutRecording { model.meanPooled(TokenBatch(encodings)) }.scalars
            for row in 0..<encodings.count {
                let ours = pooled[(row * 384)..<((row + 1) * 384)].map(Double.init)
                let theirs = expected[((start + row) * 384)..<((start + row + 1) * 384)].map(Double.init)
                let dot = zip(ours, theirs).reduce(0) { $0 + $1.0 * $1.1 }
                let cosine = dot / (ours.reduce(0) { $0 + $1 * $1 }.squareRoot() * theirs.reduce(0) { $0 + $1 * $1 }.squareRoot())
                worst = min(worst, cosine)
            }
        }
        XCTAssertGreaterThanOrEqual(worst, 0.9999, "lowest cosine similarity to sentence-transformers' embeddings")
    }
}
