import Foundation
import XCTest
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Token ids identical to Hugging Face `tokenizers` (all-MiniLM-L6-v2's tokenizer.json,
/// `Scripts/fixtures/text_parity.py`) on every shipped review snippet and a hostile list.
final class TokenizerTests: XCTestCase {
    func fnv(_ ids: [Int]) -> String {
        var value: UInt64 = 0xCBF2_9CE4_8422_2325
        for id in ids { withUnsafeBytes(of: UInt32(id).littleEndian) { for byte in $0 { value = (value ^ UInt64(byte)) &* 0x100_0000_01B3 } } }
        return String(format: "%016llx", value)
    }

    func testTokenIDsMatchHuggingFaceTokenizers() throws {
        let folder = fixtureURL("text")
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("tokenizer_expected.json"))) as! [String: Any]
        var tokenizer = try WordPieceTokenizer(directory: folder)
        tokenizer.maxLength = expected["max_length"] as? Int
        for entry in expected["hostile"] as! [[String: Any]] {
            let text = entry["text"] as! String
            XCTAssertEqual(tokenizer.encode(text).inputIDs, entry["ids"] as! [Int], "text \(text.debugDescription.prefix(80))")
        }
        for entry in expected["pairs"] as! [[String: Any]] {
            let encoding = tokenizer.encode(entry["a"] as! String, pair: entry["b"] as? String)
            XCTAssertEqual(encoding.inputIDs, entry["ids"] as! [Int], "pair \((entry["a"] as! String).prefix(30))")
            XCTAssertEqual(encoding.tokenTypeIDs, entry["type_ids"] as! [Int])
        }
        let snippets = try ShippedData.locate(nil)
        let texts = try snippets.loadTexts(split: "train").texts + snippets.loadTexts(split: "test").texts
        XCTAssertEqual(texts.count, expected["snippets"] as? Int)
        let digests = Array(expected["snippet_digests"] as! String)
        var mismatches: [String] = []
        for (i, text) in texts.enumerated() where fnv(tokenizer.encode(text).inputIDs) != String(digests[(i * 16)..<((i + 1) * 16)]) {
            mismatches.append(String(text.prefix(60)))
        }
        XCTAssertEqual(mismatches.count, 0, "snippets whose ids differ, e.g. \(mismatches.prefix(3))")

        let padded = expected["padded"] as! [String: Any]
        tokenizer.padToLength = 128
        let encoding = tokenizer.encode(padded["text"] as! String)
        XCTAssertEqual(encoding.inputIDs, padded["ids"] as! [Int])
        XCTAssertEqual(encoding.attentionMask, padded["attention_mask"] as! [Int])
        XCTAssertEqual(encoding.tokenTypeIDs, padded["type_ids"] as! [Int])
    }

    func testBadTokenizerAndTableInputAreNamed() throws {
        XCTAssertThrowsError(try WordPieceTokenizer(vocabulary: ["[PAD]", "[CLS]", "[SEP]", "hello"])) { error in
            XCTAssertEqual(error as? TokenizerError, .missingToken("[UNK]"))
        }
        for (tsv, fragment) in [("label\ttext\nfresh\tgood\nrotten no tab\n", "line 3: no tab"), ("text\tlabel\nfresh\tx\n", "header"),
                                ("label\ttext\nawful\tbad\n", "label 'awful' is not one of fresh, plot, rotten"), ("label\ttext\n\tno label\n", "line 2: empty label")] {
            XCTAssertThrowsError(try LabeledTexts(tsv: Data(tsv.utf8), allowedLabels: ["fresh", "rotten", "plot"])) { error in
                XCTAssert("\(error)".contains(fragment), "'\(error)' should contain '\(fragment)'")
            }
        }
        XCTAssertThrowsError(try LabeledTexts(tsv: Data([0x6C, 0xFF, 0xFE]))) { error in XCTAssert("\(error)".contains("UTF-8"), "\(error)") }
    }
}

/// Text fine-tuning on a tiny BERT: it learns a separable task, frozen tensors stay bit-identical,
/// a linear probe trains the head only, and SlimFit runs with the head always trained.
final class TextFineTuneTests: XCTestCase {
    func testTinyBertLearnsAndKeepsFrozenTensors() throws {
        let words = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "plot", "was", "a"]
        let tokenizer = try WordPieceTokenizer(vocabulary: ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)
        var g = PhiloxGenerator(seed: 3)
        func sentence(_ positive: Bool) -> String {
            let mood = positive ? ["good", "great", "fine"] : ["bad", "awful", "poor"]
            return ["the film was", "a plot", "the plot was a"][Int(g.nextUInt32() % 3)] + " " + mood[Int(g.nextUInt32() % 3)]
        }
        let labels = (0..<256).map { $0 % 2 == 0 ? "fresh" : "rotten" }
        let train = LabeledTexts(texts: labels.map { sentence($0 == "fresh") }, labels: labels)
        let test = LabeledTexts(texts: labels.prefix(64).map { sentence($0 == "fresh") }, labels: Array(labels.prefix(64)))
        let config = BertConfig(vocabularySize: 15, hiddenSize: 16, layers: 2, heads: 2, intermediateSize: 24, maxPositions: 32,
                                hiddenDropout: 0, attentionDropout: 0)
        var settings = TextFineTuneSettings()
        (settings.epochs, settings.batch, settings.learningRate) = (3, 16, 3e-3)

        settings.freeze = ["bert.embeddings.*"]
        let model = BertClassifier(config: config, classes: 2, seed: 1)
        let embeddings = model.namedParameters().filter { $0.name.hasPrefix("bert.embeddings.") }.map { ($0.name, $0.parameter.value.scalars) }
        let report = try TextFineTune.run(model: model, tokenizer: tokenizer, train: train, test: test, labels: ["fresh", "rotten"], settings: settings)
        XCTAssertGreaterThan(report.testAccuracy, 0.9, "a separable task is learnt")
        XCTAssertEqual(report.steps, 48)
        for (name, values) in embeddings { XCTAssertEqual(model.parameter(named: name)!.value.scalars, values, "\(name) is frozen") }

        settings.freeze = []
        settings.linearProbe = true
        let probe = BertClassifier(config: config, classes: 2, seed: 1)
        let probeReport = try TextFineTune.run(model: probe, tokenizer: tokenizer, train: train, test: test, labels: ["fresh", "rotten"], settings: settings)
        XCTAssertEqual(probeReport.trainableParameters, 16 * 2 + 2, "a linear probe trains the classifier only")

        settings.linearProbe = false
        settings.slimFitBudget = 0.5
        let slim = BertClassifier(config: config, classes: 2, seed: 1)
        let slimReport = try TextFineTune.run(model: slim, tokenizer: tokenizer, train: train, test: test, labels: ["fresh", "rotten"], settings: settings)
        XCTAssertEqual(slimReport.scheduler, "slimfit")
        XCTAssertGreaterThan(slimReport.testAccuracy, 0.8, "half the tensors frozen at each step, it still learns")
        XCTAssertThrowsError(try TextFineTune.run(model: slim, tokenizer: tokenizer, train: train, test: test, labels: ["fresh"], settings: settings)) { error in
            XCTAssert("\(error)".contains("'rotten' is not one of"), "\(error)")
        }
    }
}
