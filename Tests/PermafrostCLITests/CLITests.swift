import Foundation
import XCTest
import PermafrostIO

/// Runs the built `permafrost` executable as a user would.
final class CLITests: XCTestCase {
    var executable: URL {
        // The test bundle sits beside the products of the same build (the bundle URL is that folder on
        // Linux, the .xctest bundle inside it on macOS).
        let bundle = Bundle(for: CLITests.self).bundleURL
        for directory in [bundle, bundle.deletingLastPathComponent()] {
            let candidate = directory.appendingPathComponent("permafrost")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return bundle.appendingPathComponent("permafrost")
    }

    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @discardableResult
    func run(_ arguments: [String], expectSuccess: Bool? = true, file: StaticString = #filePath, line: UInt = #line) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = root
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        if let expectSuccess {
            XCTAssertEqual(process.terminationStatus == 0, expectSuccess, "permafrost \(arguments.joined(separator: " ")):\n\(output)", file: file, line: line)
        }
        return (process.terminationStatus, output)
    }

    func temporary() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    override func setUpWithError() throws {
        // The test target depends on the executable, so it is always built: a missing binary is a failure.
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: executable.path), "permafrost executable not built at \(executable.path)")
    }

    func testGuardVerifyExitsZeroOnlyForAnIntactCorrectlySignedGuard() throws {
        let dir = try temporary()
        // An 8×8 fixture model does not fit the 28×28 data: a clear refusal, not a crash.
        let small = root.appendingPathComponent("Tests/PermafrostModelsTests/Fixtures/unet_attention_classes")
        let refusedModel = try run(["guard", "learn", "--base", small.path, "--steps", "1", "--output", dir.appendingPathComponent("g.json").path], expectSuccess: false)
        XCTAssert(refusedModel.output.contains("shipped data is 1×28×28"), refusedModel.output)
        let base = dir.appendingPathComponent("base")
        try run(["pretrain", "--config", "tiny", "--steps", "2", "--batch", "2", "--output", base.path, "--quiet", "--threads", "1"])
        try run(["guard", "keygen", "--private-key", dir.appendingPathComponent("p.key").path, "--public-key", dir.appendingPathComponent("p.pub").path])
        try run(["guard", "keygen", "--private-key", dir.appendingPathComponent("q.key").path, "--public-key", dir.appendingPathComponent("q.pub").path])
        let guardURL = dir.appendingPathComponent("guard.json")
        try run(["guard", "learn", "--base", base.path, "--protocol", "near", "--steps", "5", "--batch", "2", "--ratio", "0.5",
                 "--output", guardURL.path, "--key", dir.appendingPathComponent("p.key").path, "--threads", "1"])
        try run(["guard", "verify", guardURL.path, "--public-key", dir.appendingPathComponent("p.pub").path, "--base", base.path, "--model", base.path])
        // Wrong publisher key.
        let wrong = try run(["guard", "verify", guardURL.path, "--public-key", dir.appendingPathComponent("q.pub").path], expectSuccess: false)
        XCTAssert(wrong.output.contains("not by the trusted publisher key"), wrong.output)
        // A modified manifest.
        let object = try JSONSerialization.jsonObject(with: Data(try String(contentsOf: guardURL, encoding: .utf8).utf8)) as! [String: Any]
        var tampered = object
        tampered["frozen"] = Array((object["frozen"] as! [String]).dropLast())
        try JSONSerialization.data(withJSONObject: tampered).write(to: dir.appendingPathComponent("tampered.json"))
        let modified = try run(["guard", "verify", dir.appendingPathComponent("tampered.json").path], expectSuccess: false)
        XCTAssert(modified.output.contains("signature does not verify"), modified.output)
        // Another base.
        let other = dir.appendingPathComponent("other")
        try run(["pretrain", "--config", "tiny", "--steps", "1", "--batch", "2", "--seed", "5", "--output", other.path, "--quiet", "--threads", "1"])
        let mismatch = try run(["guard", "verify", guardURL.path, "--base", other.path], expectSuccess: false)
        XCTAssert(mismatch.output.contains("was learnt for a base checkpoint"), mismatch.output)
        // A fine-tune refuses the guard for the wrong base, and enforces it for the right one.
        let refused = try run(["finetune", "--base", other.path, "--guard", guardURL.path, "--digits", "6", "--steps", "1", "--batch", "2",
                               "--output", dir.appendingPathComponent("x").path], expectSuccess: false)
        XCTAssert(refused.output.contains("refusing to fine-tune"), refused.output)
    }

    /// The baselines' published models: a seeded random guard, and a lock with nothing enforced.
    func testRandomSelectionIsSeededAndAnUnenforcedLockPublishesNoGuard() throws {
        let dir = try temporary()
        let base = dir.appendingPathComponent("base")
        try run(["pretrain", "--config", "tiny", "--steps", "1", "--batch", "2", "--output", base.path, "--quiet", "--threads", "1"])
        func randomGuard(_ name: String, seed: Int) throws -> [String: Any] {
            let url = dir.appendingPathComponent(name)
            try run(["guard", "learn", "--base", base.path, "--select", "random", "--seed", "\(seed)", "--ratio", "0.3", "--by-parameters", "--output", url.path])
            return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        }
        let a = try randomGuard("a.json", seed: 1), b = try randomGuard("b.json", seed: 1), c = try randomGuard("c.json", seed: 2)
        XCTAssertEqual(a["frozen"] as? [String], b["frozen"] as? [String])
        XCTAssertNotEqual(a["frozen"] as? [String], c["frozen"] as? [String])
        XCTAssertGreaterThanOrEqual(a["freeze_ratio_params"] as! Double, 0.3)
        XCTAssertEqual((a["settings"] as? [String: String])?["selection"], "random, ranking cut at the ratio")

        let locked = dir.appendingPathComponent("lock-only")
        let output = try run(["guard", "lock", "--base", base.path, "--steps", "1", "--batch", "2", "--output", locked.path, "--threads", "1"]).output
        XCTAssert(output.contains("nothing enforced"), output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: locked.appendingPathComponent("base/diffusion_pytorch_model.safetensors").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: locked.appendingPathComponent("guard.json").path))
    }

    /// LoRA through the guarded fine-tune: an adapter on a guarded layer is refused naming the tensor;
    /// on free layers it trains, lands as a PEFT folder and merged in the model, the guard verifies on
    /// the merged model, and `adapter merge --guard` and `taskvec add --guard` refuse what would change
    /// a guarded tensor.
    func testLoRAFineTuneKeepsTheGuardAndWritesAPEFTFolder() throws {
        let dir = try temporary()
        let base = dir.appendingPathComponent("base"), key = dir.appendingPathComponent("p.key"), pub = dir.appendingPathComponent("p.pub")
        try run(["pretrain", "--config", "tiny", "--steps", "1", "--batch", "2", "--output", base.path, "--quiet", "--threads", "1"])
        try run(["guard", "keygen", "--private-key", key.path, "--public-key", pub.path])
        let guardURL = dir.appendingPathComponent("guard.json")
        try run(["guard", "learn", "--base", base.path, "--select", "random", "--ratio", "0.5", "--by-parameters", "--key", key.path, "--output", guardURL.path])
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: guardURL)) as! [String: Any]
        let frozen = Set(manifest["frozen"] as! [String])
        let names = try SafetensorsFile(contentsOf: base.appendingPathComponent("diffusion_pytorch_model.safetensors")).entries
            .filter { $0.shape.count == 4 && $0.name.hasSuffix(".weight") }.map(\.name)
        let guarded = try XCTUnwrap(names.first { frozen.contains($0) }), free = try XCTUnwrap(names.first { !frozen.contains($0) })
        func module(_ tensor: String) -> String { String(tensor.dropLast(".weight".count)) }
        func finetune(_ target: String, guard withGuard: Bool, _ output: String, expectSuccess: Bool = true) throws -> String {
            try run(["finetune", "--base", base.path] + (withGuard ? ["--guard", guardURL.path, "--publisher-key", pub.path] : [])
                    + ["--digits", "6", "--steps", "2", "--batch", "2", "--lora", module(target), "--rank", "2", "--quiet",
                       "--output", dir.appendingPathComponent(output).path, "--threads", "1"], expectSuccess: expectSuccess).output
        }
        let refused = try finetune(guarded, guard: true, "refused", expectSuccess: false)
        XCTAssert(refused.contains("'\(guarded)' is frozen by the publisher's guard"), refused)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("refused/adapter").path))

        _ = try finetune(free, guard: true, "user")
        let user = dir.appendingPathComponent("user")
        let adapter = try SafetensorsFile(contentsOf: user.appendingPathComponent("adapter/adapter_model.safetensors"))
        XCTAssertEqual(Set(adapter.names), ["base_model.model.\(module(free)).lora_A.weight", "base_model.model.\(module(free)).lora_B.weight"])
        try run(["guard", "verify", guardURL.path, "--public-key", pub.path, "--base", base.path, "--model", user.appendingPathComponent("model").path])
        let inspect = try run(["adapter", "inspect", user.appendingPathComponent("adapter").path]).output
        XCTAssert(inspect.contains("LoRA rank 2") && inspect.contains(module(free)), inspect)

        // An unguarded user adapts the guarded layer; merging that adapter under the guard is refused.
        _ = try finetune(guarded, guard: false, "unguarded")
        let merge = try run(["adapter", "merge", "--model", base.path, "--adapter", dir.appendingPathComponent("unguarded/adapter").path,
                             "--guard", guardURL.path, "--output", dir.appendingPathComponent("merged").path], expectSuccess: false)
        XCTAssert(merge.output.contains("publisher's guard"), merge.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("merged").path))

        // Its task vector is refused under the guard too; without it, base + τ is that user's model, bit for bit.
        let tau = dir.appendingPathComponent("tau.safetensors").path
        try run(["taskvec", "make", "--pretrained", base.path, "--fine-tuned", dir.appendingPathComponent("unguarded/model").path, "--output", tau])
        let added = try run(["taskvec", "add", "--model", base.path, "--vector", tau, "--guard", guardURL.path,
                             "--output", dir.appendingPathComponent("added").path], expectSuccess: false)
        XCTAssert(added.output.contains("which the publisher's guard freezes"), added.output)
        try run(["taskvec", "add", "--model", base.path, "--vector", tau, "--output", dir.appendingPathComponent("added").path])
        let weights = "diffusion_pytorch_model.safetensors"
        let rebuilt = try SafetensorsFile(contentsOf: dir.appendingPathComponent("added/\(weights)"))
        let original = try SafetensorsFile(contentsOf: dir.appendingPathComponent("unguarded/model/\(weights)"))
        for name in original.names { XCTAssertEqual(try rebuilt.storedBytes(named: name), try original.storedBytes(named: name), name) }
    }

    func testCheckpointInspectAndUNetForward() throws {
        let dir = try temporary()
        let bad = dir.appendingPathComponent("bad.safetensors")
        try Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x7B]).write(to: bad)
        let inspect = try run(["checkpoint", "inspect", bad.path], expectSuccess: false)
        XCTAssert(inspect.output.contains("header length"), inspect.output)
        let folder = root.appendingPathComponent("Tests/PermafrostModelsTests/Fixtures/unet_attention_classes")
        let json = try run(["checkpoint", "inspect", "--json", folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path])
        XCTAssert(json.output.contains("\"sha256\""))
        let out = dir.appendingPathComponent("out.safetensors")
        try run(["unet", "forward", "--model", folder.path, "--inputs", folder.appendingPathComponent("inputs_int.safetensors").path, "--output", out.path])
        let ours = try SafetensorsFile(contentsOf: out).tensor(named: "sample").scalars
        let expected = try SafetensorsFile(contentsOf: folder.appendingPathComponent("expected_int.safetensors")).tensor(named: "sample").scalars
        XCTAssertLessThanOrEqual(zip(ours, expected).map { abs($0 - $1) }.max()!, 1e-4)
    }

    /// `guard summarize` averages the domains and seeds and applies the goal's three conditions.
    func testGuardSummarizeChecksTheGoal() throws {
        func cell(_ method: String, _ domain: String, _ rate: Double, target: Double? = nil, seed: Int? = nil) -> [String: Any] {
            var c: [String: Any] = ["method": method, "domain": domain, "freeze_ratio": 0.5, "freeze_ratio_params": target ?? 0, "recognition_rate": rate]
            if let target { c["target_ratio"] = target }
            if let seed { c["seed"] = seed }
            return c
        }
        let results: [[String: Any]] = [
            cell("full", "restricted", 0.96), cell("full", "restricted-malicious-slots", 0.94), cell("full", "permitted-digits", 0.80),
            cell("none", "restricted", 0.01), cell("none", "restricted-malicious-slots", 0.01), cell("none", "permitted-digits", 0.05),
            cell("guard", "restricted", 0.30, target: 0.7), cell("guard", "restricted-malicious-slots", 0.36, target: 0.7), cell("guard", "permitted-digits", 0.78, target: 0.7),
            cell("magnitude", "restricted", 0.30, target: 0.7), cell("magnitude", "restricted-malicious-slots", 0.36, target: 0.7), cell("magnitude", "permitted-digits", 0.60, target: 0.7),
            cell("random", "restricted", 0.90, target: 0.7, seed: 0), cell("random", "restricted-malicious-slots", 0.90, target: 0.7, seed: 0), cell("random", "permitted-digits", 0.75, target: 0.7, seed: 0),
            cell("random", "restricted", 0.70, target: 0.7, seed: 1), cell("random", "restricted-malicious-slots", 0.70, target: 0.7, seed: 1), cell("random", "permitted-digits", 0.75, target: 0.7, seed: 1),
        ]
        let directory = try temporary()
        let url = directory.appendingPathComponent("report.json")
        try JSONSerialization.data(withJSONObject: ["protocol": "far", "command": "test", "settings": [:] as [String: String], "results": results]).write(to: url)
        let output = try run(["guard", "summarize", url.path]).output
        let rows = output.split(separator: "\n").map(String.init)
        // guard: restricted 33% ≤ 0.5 × 95% and ≤ 0.7 × 80% (random mean); permitted 78% ≥ 80% − 5.
        XCTAssertTrue(rows.contains { $0.hasPrefix("| guard | 70% |") && $0.hasSuffix("| yes |") }, output)
        // magnitude blocks as well but loses 20 points of permitted recognition.
        XCTAssertTrue(rows.contains { $0.hasPrefix("| magnitude | 70% |") && $0.hasSuffix("| no |") }, output)
        XCTAssertTrue(rows.contains { $0.hasPrefix("| random | 70% |") && $0.contains("80.0%") }, "random's restricted mean over seeds and label choices: \(output)")
        let broken = directory.appendingPathComponent("broken.json")
        try Data("{\"results\": 3}".utf8).write(to: broken)
        XCTAssertTrue(try run(["guard", "summarize", broken.path], expectSuccess: false).output.contains("not a guard evaluation report"))
    }

    /// `demo --out DIR` (the issue's spelling) is accepted as `--output`: a missing base is the error,
    /// not an unknown option.
    func testDemoAcceptsOutAsAnAliasOfOutput() throws {
        let directory = try temporary()
        let missing = directory.appendingPathComponent("no-such-base").path
        let output = try run(["demo", "--out", directory.appendingPathComponent("demo").path, "--base", missing], expectSuccess: false).output
        XCTAssertFalse(output.contains("Unknown option"), output)
        XCTAssertTrue(output.contains("no-such-base"), output)
    }

    /// A guard on a BERT folder: learnt on the shipped snippets under the text protocol, signed,
    /// verified against the base, enforced by `text finetune --guard`, and verified on the saved result.
    func testBertGuardLearnsVerifiesAndIsEnforcedByTextFineTuning() throws {
        let dir = try temporary()
        let bert = dir.appendingPathComponent("bert")
        try FileManager.default.createDirectory(at: bert, withIntermediateDirectories: true)
        let fixture = root.appendingPathComponent("Tests/PermafrostModelsTests/Fixtures/bert_tiny")
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: fixture.appendingPathComponent(file), to: bert.appendingPathComponent(file))
        }
        let words = ["the", "a", "film", "movie", "good", "bad", "great", "dull", "story", "of", "is", "and", "it", ",", "."]
        let vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + (0..<(99 - 5 - words.count)).map { "w\($0)" }
        try vocabulary.joined(separator: "\n").write(to: bert.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        let key = dir.appendingPathComponent("p.key"), pub = dir.appendingPathComponent("p.pub"), guardURL = dir.appendingPathComponent("g.json")
        try run(["guard", "keygen", "--private-key", key.path, "--public-key", pub.path])
        let wrongProtocol = try run(["guard", "learn", "--base", bert.path, "--protocol", "far", "--output", guardURL.path], expectSuccess: false)
        XCTAssert(wrongProtocol.output.contains("text protocol"), wrongProtocol.output)
        let learnt = try run(["guard", "learn", "--base", bert.path, "--steps", "4", "--batch", "4", "--ratio", "0.5", "--by-parameters",
                              "--key", key.path, "--output", guardURL.path, "--threads", "1"]).output
        XCTAssert(learnt.contains("signed"), learnt)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: guardURL)) as! [String: Any]
        let frozen = manifest["frozen"] as! [String]
        XCTAssertFalse(frozen.isEmpty)
        XCTAssertTrue(frozen.allSatisfy { !$0.hasPrefix("bert.") && !$0.hasPrefix("classifier.") }, "\(frozen)")
        try run(["guard", "verify", guardURL.path, "--public-key", pub.path, "--base", bert.path])

        let rows = (0..<24).map { i in i % 2 == 0 ? "fresh\tgood great film \(i)" : "rotten\tbad dull movie \(i)" }
        let tsv = dir.appendingPathComponent("set.tsv")
        try (["label\ttext"] + rows).joined(separator: "\n").write(to: tsv, atomically: true, encoding: .utf8)
        let tuned = dir.appendingPathComponent("tuned")
        let fineTune = try run(["text", "finetune", "--model", bert.path, "--guard", guardURL.path, "--publisher-key", pub.path, "--labels", "fresh,rotten",
                                "--train", tsv.path, "--test", tsv.path, "--batch", "4", "--output", tuned.path, "--threads", "1"]).output
        XCTAssert(fineTune.contains("guard: \(frozen.count) guarded tensors bit-identical"), fineTune)
        try run(["guard", "verify", guardURL.path, "--public-key", pub.path, "--model", tuned.path])
        let other = dir.appendingPathComponent("other.key")
        try run(["guard", "keygen", "--private-key", other.path, "--public-key", dir.appendingPathComponent("other.pub").path])
        let pinned = try run(["text", "finetune", "--model", bert.path, "--guard", guardURL.path, "--publisher-key", dir.appendingPathComponent("other.pub").path,
                              "--labels", "fresh,rotten", "--train", tsv.path, "--test", tsv.path, "--batch", "4"], expectSuccess: false).output
        XCTAssert(pinned.contains("refusing to fine-tune"), pinned)
    }
}
