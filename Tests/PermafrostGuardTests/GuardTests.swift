import Crypto
import Foundation
import XCTest
import PermafrostGuard
import PermafrostIO
import PermafrostNN
import PermafrostTensor

final class GuardManifestTests: XCTestCase {
    func model(seed: UInt64 = 1) -> Sequential {
        var g = PhiloxGenerator(seed: seed)
        return Sequential([Linear(6, 8, generator: &g), ReLU(), Linear(8, 3, generator: &g)])
    }

    func signedManifest(key: Curve25519.Signing.PrivateKey, baseURL: URL) throws -> (Sequential, GuardManifest) {
        let m = model()
        try m.save(to: baseURL)
        var manifest = try GuardManifest(model: m, frozen: ["0.weight", "2.bias"], baseSHA256: try sha256Hex(of: baseURL), settings: ["steps": "1"])
        try manifest.sign(with: key)
        return (m, manifest)
    }

    func testSignedGuardVerifiesAndRecordsRatios() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("guard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let key = Curve25519.Signing.PrivateKey()
        let (m, manifest) = try signedManifest(key: key, baseURL: dir.appendingPathComponent("base.safetensors"))
        XCTAssertNoThrow(try manifest.verifySignature(trustedKey: key.publicKey.rawRepresentation.base64EncodedString()))
        XCTAssertNoThrow(try manifest.verifyBase(dir.appendingPathComponent("base.safetensors")))
        XCTAssertEqual(manifest.freezeRatio, 0.5)
        XCTAssertEqual(manifest.freezeRatioParameters, Double(48 + 3) / Double(m.parameterCount))
        XCTAssertEqual(try manifest.changedTensors(in: m), [])
        // Round trip through the file keeps the signature valid.
        try manifest.write(to: dir.appendingPathComponent("guard.json"))
        XCTAssertNoThrow(try GuardManifest.load(from: dir.appendingPathComponent("guard.json")).verifySignature())
    }

    func testTamperingIsDetected() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("guard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let key = Curve25519.Signing.PrivateKey(), other = Curve25519.Signing.PrivateKey()
        let baseURL = dir.appendingPathComponent("base.safetensors")
        let (m, manifest) = try signedManifest(key: key, baseURL: baseURL)

        // 1. A modified manifest (one tensor dropped from the guard).
        var edited = manifest
        edited.frozen.removeLast()
        XCTAssertThrowsError(try edited.verifySignature()) { XCTAssertEqual($0 as? GuardError, .badSignature) }
        var reweighed = manifest
        reweighed.freezeRatio = 0.9
        XCTAssertThrowsError(try reweighed.verifySignature()) { XCTAssertEqual($0 as? GuardError, .badSignature) }

        // 2. A wrong key: re-signed by someone else, or checked against another publisher.
        var forged = edited
        try forged.sign(with: other)
        XCTAssertNoThrow(try forged.verifySignature(), "self-consistent, but…")
        XCTAssertThrowsError(try forged.verifySignature(trustedKey: key.publicKey.rawRepresentation.base64EncodedString())) { error in
            guard case .untrustedKey? = error as? GuardError else { return XCTFail("\(error)") }
        }
        var swappedKey = manifest
        swappedKey.publicKey = other.publicKey.rawRepresentation.base64EncodedString()
        XCTAssertThrowsError(try swappedKey.verifySignature()) { XCTAssertEqual($0 as? GuardError, .badSignature) }
        var unsigned = manifest
        unsigned.signature = nil
        XCTAssertThrowsError(try unsigned.verifySignature()) { XCTAssertEqual($0 as? GuardError, .unsigned) }

        // 3. A checkpoint whose guarded tensor changed by one ULP.
        var weights = m.parameter(named: "0.weight")!.value
        weights.withUnsafeMutableBufferPointer { $0[5] = $0[5].nextUp }
        m.parameter(named: "0.weight")!.value = weights
        XCTAssertEqual(try manifest.changedTensors(in: m), ["0.weight"])
        let tampered = dir.appendingPathComponent("tampered.safetensors")
        try m.save(to: tampered)
        XCTAssertEqual(try manifest.changedTensors(in: try SafetensorsFile(contentsOf: tampered)), ["0.weight"])

        // 4. A guard for another base.
        let otherBase = dir.appendingPathComponent("other.safetensors")
        try model(seed: 2).save(to: otherBase)
        XCTAssertThrowsError(try manifest.verifyBase(otherBase)) { error in
            guard case .baseMismatch? = error as? GuardError else { return XCTFail("\(error)") }
            XCTAssert("\(error)".contains(manifest.baseSHA256))
        }
    }

    func testEnforcedGuardSurvivesUserPlansAndTraining() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("guard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let (m, manifest) = try signedManifest(key: Curve25519.Signing.PrivateKey(), baseURL: dir.appendingPathComponent("base.safetensors"))
        try m.apply(manifest.plan)
        XCTAssertThrowsError(try m.unfreeze(names: ["0.weight"]))
        try m.replaceFreezing(with: FreezePlan(frozen: ["2.weight"]))  // a user's plan without the guarded tensors
        XCTAssertEqual(Set(m.frozenParameters().map(\.name)), ["0.weight", "2.bias", "2.weight"])
        try m.replaceFreezing(with: FreezePlan())
        var g = PhiloxGenerator(seed: 5)
        let x = Tensor(randomNormal: [16, 6], generator: &g)
        let optimizer = Adam.adamW(learningRate: 0.05, weightDecay: 0.1)
        for _ in 0..<5 { _ = try m.trainingStep(optimizer: optimizer) { crossEntropy(logits: m(x), labels: (0..<16).map { $0 % 3 }) } }
        XCTAssertEqual(try manifest.changedTensors(in: m), [], "guarded tensors stay bit-identical through training")
        XCTAssertNotEqual(tensorDigest(m.parameter(named: "2.weight")!.value), tensorDigest(model().parameter(named: "2.weight")!.value))
    }
}

final class GuardLearnerTests: XCTestCase {
    /// On a small classifier with a restricted and a permitted task, the learner reaches the target
    /// freeze ratio, records its trace, restores the weights and is deterministic.
    /// A small MLP with a restricted task (classes 0, 1) and a permitted one (classes 2, 3); `learn`
    /// runs the learner on it with `settings`.
    func tinyTask(seed: UInt64) -> (model: Sequential, learn: (GuardSettings) -> LearnedMask) {
        var g = PhiloxGenerator(seed: seed)
        let model = Sequential([Linear(4, 16, generator: &g), ReLU(), Linear(16, 16, generator: &g), ReLU(), Linear(16, 4, generator: &g)])
        let restrictedX = Tensor(randomNormal: [32, 4], generator: &g), permittedX = Tensor(randomNormal: [32, 4], generator: &g)
        let restrictedY = (0..<32).map { $0 % 2 }, permittedY = (0..<32).map { 2 + $0 % 2 }
        return (model, { settings in
            GuardLearner(model: model, settings: settings).learn(
                restrictedLoss: { _ in crossEntropy(logits: model(restrictedX), labels: restrictedY) },
                permittedLoss: { _ in crossEntropy(logits: model(permittedX), labels: permittedY) })
        })
    }

    func testLearnsAMaskAtTheTargetRatio() throws {
        let (model, learnWith) = tinyTask(seed: 3)
        let before = model.stateDictionary().map { $0.tensor.scalars }
        var settings = GuardSettings()
        settings.steps = 100
        settings.freezeRatio = 0.5
        func learn() -> LearnedMask { learnWith(settings) }
        let mask = learn()
        XCTAssertEqual(mask.names, model.namedParameters().map(\.name))
        XCTAssertEqual(mask.trace.count, 100 / 5)
        let ratio = Float(mask.frozen.count) / Float(mask.names.count)
        XCTAssertEqual(ratio, 0.5, accuracy: 0.17, "hard ratio \(ratio) should approach the target")
        XCTAssert(mask.softMask.contains { $0 != 0.5 }, "the mask must move")
        XCTAssertEqual(model.stateDictionary().map { $0.tensor.scalars }, before, "pretrained weights restored")
        XCTAssertEqual(learn().softMask, mask.softMask, "deterministic")
    }

    /// Projection mode holds the parameter-weighted soft mask exactly at the ratio while the losses
    /// spread it apart (the penalty mode's failure was a flat mask).
    func testProjectionHoldsTheRatioAndSpreadsTheMask() throws {
        let (model, learnWith) = tinyTask(seed: 4)
        let before = model.stateDictionary().map { $0.tensor.scalars }
        var settings = GuardSettings()
        settings.steps = 60
        settings.freezeRatio = 0.3
        settings.weightByParameters = true
        settings.ratioControl = .projection
        func learn() -> LearnedMask { learnWith(settings) }
        let mask = learn()
        let sizes = model.namedParameters().map { Float($0.parameter.value.count) }
        let weighted = zip(mask.softMask, sizes).reduce(Float(0)) { $0 + $1.0 * $1.1 } / sizes.reduce(0, +)
        XCTAssertEqual(weighted, 0.3, accuracy: 1e-3, "the projection puts the weighted soft mask at the ratio")
        XCTAssertGreaterThan(mask.softMask.max()! - mask.softMask.min()!, 0.3, "the losses spread the mask: \(mask.softMask)")
        XCTAssertEqual(model.stateDictionary().map { $0.tensor.scalars }, before, "pretrained weights restored")
        XCTAssertEqual(learn().softMask, mask.softMask, "deterministic")
    }

    /// The ranking cut freezes the highest-mask tensors first and stops once the weighted share
    /// reaches the ratio, whatever the threshold rule would have picked.
    func testRankingCutReachesTheRatioByWeight() {
        let mask = LearnedMask(names: ["a", "b", "c", "d"], softMask: [0.2, 0.9, 0.6, 0.9], trace: [])
        XCTAssertEqual(mask.rankedNames, ["b", "d", "c", "a"], "highest first, ties in model order")
        XCTAssertEqual(mask.frozen, ["b", "c", "d"])
        let sizes = ["a": 100, "b": 10, "c": 50, "d": 40]
        XCTAssertEqual(mask.frozen(ratio: 0.25, sizes: sizes), ["b", "d"], "50 of 200 scalars reach 25%")
        XCTAssertEqual(mask.frozen(ratio: 0.26, sizes: sizes), ["b", "d", "c"])
        XCTAssertEqual(mask.frozen(ratio: 0.5, sizes: [:]), ["b", "d"], "without sizes it counts tensors")
        XCTAssertEqual(mask.frozen(ratio: 0, sizes: sizes), [])
    }
}
