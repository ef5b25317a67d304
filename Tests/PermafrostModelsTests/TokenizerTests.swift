import Foundation
import XCTest
import PermafrostIO
import PermafrostModels

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
