import Crypto
import Foundation
import XCTest
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// The one guarded fine-tuning path, run through its library API on a tiny UNet: what it proves,
/// what it refuses, and that a scheduler's freezing never leaks into what it saves.
final class GuardedFineTuneTests: XCTestCase {
    var folder: URL!
    let key = Curve25519.Signing.PrivateKey()
    var publicKey: String { key.publicKey.rawRepresentation.base64EncodedString() }

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("guarded-finetune-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

    /// A saved base, a guard over its conditioning path and first down block signed by `key`, and 24 images.
    func fixture() throws -> (base: URL, manifest: GuardManifest, data: LabeledImages) {
        let base = folder.appendingPathComponent("base")
        let model = try UNet2DModel(config: .mnistTiny, seed: 7)
        try model.save(directory: base)
        let guarded = Set(model.namedParameters().map(\.name).filter { $0.hasPrefix("conv_in.") || $0.hasPrefix("down_blocks.0.") })
        var manifest = try GuardManifest(model: model, frozen: guarded, baseSHA256: try sha256Hex(of: base.appendingPathComponent(UNet2DModel.weightsFileName)),
                                         settings: ["test": "1"])
        try manifest.sign(with: key)
        var generator = PhiloxGenerator(seed: 3)
        let pixels = (0..<(24 * 28 * 28)).map { _ in UInt8(truncatingIfNeeded: generator.nextUInt32()) }
        return (base, manifest, LabeledImages(pixels: pixels, labels: (0..<24).map { $0 % 3 + 6 }, height: 28, width: 28))
    }

    func testReportProvesTheGuardAndTheDeltaHoldsExactlyTheTrainableTensors() throws {
        let (baseURL, manifest, data) = try fixture()
        let userFrozen: Set<String> = ["conv_out.weight", "conv_out.bias"]
        let run = try GuardedFineTune(base: try GuardedFineTune.Base(directory: baseURL), guard: manifest, trustedPublisherKey: publicKey,
                                      userPlan: FreezePlan(frozen: userFrozen), data: data,
                                      settings: FineTuneSettings(steps: 4, batchSize: 4, scheduler: .slimFit(budget: 0.8)))
        let delta = folder.appendingPathComponent("delta.safetensors")
        var steps: [Int] = []
        let report = try run.run(delta: delta, progress: { steps.append($0.step) })
        XCTAssertEqual(steps, [1, 2, 3, 4])

        // The proof: every guarded tensor, its digest in the manifest and after training, all equal.
        XCTAssertEqual(report.guardedTensorsBitIdentical, true)
        XCTAssertEqual(report.changedGuardedTensors, [])
        XCTAssertEqual(report.guardedTensors.map(\.name), manifest.frozen)
        for tensor in report.guardedTensors {
            XCTAssertEqual(tensor.expectedSHA256, manifest.frozenSHA256[tensor.name])
            XCTAssertEqual(tensor.actualSHA256, tensor.expectedSHA256)
        }
        XCTAssertEqual(report.guardPublicKey, publicKey)
        XCTAssertEqual(report.guardSignature, manifest.signature)
        XCTAssertEqual(report.baseSHA256, manifest.baseSHA256)

        // SlimFit froze most tensors at the last step, but the run's own plan (guard ∪ user) is what
        // the model holds afterwards, and so what the delta holds.
        let expectedFrozen = Set(manifest.frozen).union(userFrozen)
        let all = run.model.namedParameters().map(\.name)
        XCTAssertEqual(Set(run.model.frozenParameters().map(\.name)), expectedFrozen)
        XCTAssertEqual(Set(report.deltaTensors), Set(all).subtracting(expectedFrozen))
        XCTAssertEqual(report.frozenTensors, expectedFrozen.count)
        let stored = try SafetensorsFile(contentsOf: delta)
        XCTAssertEqual(Set(stored.names), Set(report.deltaTensors))
        XCTAssertEqual(report.deltaSHA256, try sha256Hex(of: delta))
        XCTAssertEqual(report.scheduler, "slimfit")
        XCTAssertEqual(report.classSlots, [6, 7, 8])

        // The delta applies to the base and reproduces the trained model, whose guarded tensors are the base's.
        let restored = try UNet2DModel(directory: baseURL)
        try DeltaCheckpoint.load(base: baseURL.appendingPathComponent(UNet2DModel.weightsFileName), delta: delta, into: restored)
        XCTAssertEqual(try manifest.changedTensors(in: restored), [])
        for ((name, a), (_, b)) in zip(restored.namedParameters(), run.model.namedParameters()) {
            XCTAssertEqual(a.value.scalars, b.value.scalars, name)
        }
        // The user's frozen tensors moved no more than the guard's.
        let base = try UNet2DModel(directory: baseURL)
        XCTAssertEqual(base.parameter(named: "conv_out.weight")?.value.scalars, run.model.parameter(named: "conv_out.weight")?.value.scalars)

        // One schema, snake_case.
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any] ?? [:]
        for key in ["base_sha256", "guarded_tensors_bit_identical", "guarded_tensors", "delta_tensors", "delta_sha256", "seconds_per_step", "class_slots"] {
            XCTAssertNotNil(json[key], key)
        }
        XCTAssertTrue(json.keys.allSatisfy { $0 == $0.lowercased() }, "\(json.keys.sorted())")
    }

    func testRefusesGuardsThatDoNotVerify() throws {
        let (baseURL, manifest, data) = try fixture()
        let settings = FineTuneSettings(steps: 1, batchSize: 2)
        func refusal(_ guardManifest: GuardManifest, trustedKey: String? = nil, acceptUnsigned: Bool = false,
                     base: GuardedFineTune.Base? = nil) throws -> GuardError? {
            do {
                _ = try GuardedFineTune(base: try base ?? GuardedFineTune.Base(directory: baseURL), guard: guardManifest, trustedPublisherKey: trustedKey,
                                        acceptUnsigned: acceptUnsigned, data: data, settings: settings)
                return nil
            } catch let GuardedFineTuneError.guardRefused(error) {
                return error
            }
        }
        var tampered = manifest
        tampered.frozen.removeLast()
        XCTAssertEqual(try refusal(tampered), .badSignature)
        let stranger = Curve25519.Signing.PrivateKey().publicKey.rawRepresentation.base64EncodedString()
        XCTAssertEqual(try refusal(manifest, trustedKey: stranger), .untrustedKey(expected: stranger, found: publicKey))
        var unsigned = manifest
        unsigned.signature = nil
        XCTAssertEqual(try refusal(unsigned), .unsigned)
        XCTAssertNil(try refusal(unsigned, acceptUnsigned: true), "an evaluation's own unsigned mask is accepted when asked")
        // The right file digest but other weights in hand: the tensor digests catch it.
        let other = try UNet2DModel(config: .mnistTiny, seed: 8)
        let error = try refusal(manifest, base: GuardedFineTune.Base(model: other, sha256: manifest.baseSHA256))
        guard case let .tensorChanged(names)? = error else { return XCTFail("expected tensorChanged, got \(String(describing: error))") }
        // Norm scales and shifts start at 1 and 0 whatever the seed; every other guarded tensor differs.
        let differing = manifest.frozen.filter { tensorDigest(other.parameter(named: $0)!.value) != manifest.frozenSHA256[$0] }
        XCTAssertFalse(differing.isEmpty)
        XCTAssertEqual(Set(names), Set(differing))
        XCTAssertEqual(try refusal(manifest, base: GuardedFineTune.Base(model: other, sha256: "00")), .baseMismatch(expected: manifest.baseSHA256, actual: "00"))
    }

    func testBadSettingsAndDataAreTypedErrors() throws {
        let (baseURL, manifest, data) = try fixture()
        let base = try GuardedFineTune.Base(directory: baseURL)
        XCTAssertThrowsError(try GuardedFineTune(base: base, guard: manifest, data: data, settings: FineTuneSettings(steps: 0))) {
            guard case GuardedFineTuneError.invalidSettings = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try GuardedFineTune(base: base, guard: manifest, data: data, settings: FineTuneSettings(scheduler: .slimFit(budget: 1)))) {
            guard case GuardedFineTuneError.invalidSettings = $0 else { return XCTFail("\($0)") }
        }
        let outOfRange = LabeledImages(pixels: data.pixels, labels: data.labels.map { $0 + 10 }, height: 28, width: 28)
        XCTAssertThrowsError(try GuardedFineTune(base: base, guard: manifest, data: outOfRange, settings: FineTuneSettings())) {
            guard case GuardedFineTuneError.classSlotOutOfRange(slot: 16, slots: 16) = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try GuardedFineTune(base: base, guard: manifest, userPlan: FreezePlan(frozen: ["conv_inn.weight"]), data: data,
                                                 settings: FineTuneSettings())) {
            guard case GuardedFineTuneError.plan(.unknownTensor(name: "conv_inn.weight", closest: let closest)) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(closest.first, "conv_in.weight")
        }
    }

    func testCancelledAndResumedRunEqualsTheUninterruptedOne() throws {
        let (baseURL, manifest, data) = try fixture()
        let settings = FineTuneSettings(steps: 5, batchSize: 3, checkpointEvery: 2)
        let whole = try GuardedFineTune(base: try GuardedFineTune.Base(directory: baseURL), guard: manifest, data: data, settings: settings)
        _ = try whole.run()

        let checkpoint = folder.appendingPathComponent("checkpoint")
        let first = try GuardedFineTune(base: try GuardedFineTune.Base(directory: baseURL), guard: manifest, data: data, settings: settings)
        var calls = 0
        XCTAssertThrowsError(try first.run(checkpoint: checkpoint, isCancelled: { calls += 1; return calls > 3 })) {
            guard case GuardedFineTuneError.cancelled(step: 3) = $0 else { return XCTFail("\($0)") }
        }
        let resumed = try GuardedFineTune(base: try GuardedFineTune.Base(directory: baseURL), guard: manifest, data: data, settings: settings,
                                          resumingFrom: checkpoint)
        XCTAssertEqual(resumed.resumedFromStep, 2)
        let report = try resumed.run(checkpoint: checkpoint)
        XCTAssertEqual(report.resumedFromStep, 2)
        XCTAssertEqual(report.guardedTensorsBitIdentical, true)
        for ((name, a), (_, b)) in zip(resumed.model.namedParameters(), whole.model.namedParameters()) {
            XCTAssertEqual(a.value.scalars, b.value.scalars, name)
        }
    }
}
