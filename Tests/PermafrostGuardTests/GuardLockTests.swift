import Crypto
import Foundation
import XCTest
import PermafrostGuard
import PermafrostDiffusion
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// The lock: it changes only the frozen tensors, it measurably resists a user's fine-tuning of the
/// rest, and a locked, signed base goes through the guarded fine-tuning path unchanged.
final class GuardLockTests: XCTestCase {
    /// A two-task regression problem on a small MLP: inputs of the restricted task live in the first
    /// half of the input space, the permitted task's in the second, each with its own target map.
    struct Problem {
        let restrictedX: Tensor, restrictedY: Tensor, permittedX: Tensor, permittedY: Tensor, retainX: Tensor, retainY: Tensor

        init(seed: UInt64) {
            var g = PhiloxGenerator(seed: seed)
            func task(_ offset: Int, _ count: Int) -> (Tensor, Tensor) {
                var x = Tensor.zeros([count, 8])
                let noise = Tensor(randomNormal: [count, 4], generator: &g)
                x.withUnsafeMutableBufferPointer { xs in noise.withUnsafeBufferPointer { n in
                    for i in 0..<count { for j in 0..<4 { xs[i * 8 + offset + j] = n[i * 4 + j] } }
                } }
                let map = Tensor(randomNormal: [8, 3], generator: &g)
                return (x, x.matmul(map).tanh())
            }
            (restrictedX, restrictedY) = task(0, 64)
            (permittedX, permittedY) = task(4, 64)
            (retainX, retainY) = task(4, 64)
        }
    }

    func mlp(seed: UInt64) -> Sequential {
        var g = PhiloxGenerator(seed: seed)
        return Sequential([Linear(8, 16, generator: &g), Tanh(), Linear(16, 16, generator: &g), Tanh(), Linear(16, 3, generator: &g)])
    }

    func rows(_ t: Tensor, _ stream: UInt64, count: Int = 16) -> [Int] {
        var g = PhiloxGenerator(seed: 99, stream: stream)
        return (0..<count).map { _ in Int(g.nextUInt32() % UInt32(t.shape[0])) }
    }

    func task(_ model: Sequential, _ p: Problem) -> LockTask {
        func loss(_ x: Tensor, _ y: Tensor, _ stream: UInt64) -> Tensor {
            let r = rows(x, stream)
            return meanSquaredError(model(x.gatheringRows(r)), y.gatheringRows(r))
        }
        return LockTask(restricted: { s, _ in loss(p.restrictedX, p.restrictedY, s) },
                        permitted: { loss(p.permittedX, p.permittedY, $0) },
                        retain: { loss(p.retainX, p.retainY, $0) })
    }

    /// The restricted loss after a user's `steps` Adam steps on everything outside `frozen`.
    func restrictedLossAfterAttack(_ model: Sequential, frozen: Set<String>, problem p: Problem, steps: Int) throws -> Float {
        try model.apply(FreezePlan(frozen: frozen, isEnforced: true))
        let optimizer = Adam(learningRate: 3e-3)
        for step in 0..<steps {
            let r = rows(p.restrictedX, 10_000 + UInt64(step))
            _ = try model.trainingStep(optimizer: optimizer) { meanSquaredError(model(p.restrictedX.gatheringRows(r)), p.restrictedY.gatheringRows(r)) }
        }
        return GradientRecording.withoutRecording { meanSquaredError(model(p.restrictedX), p.restrictedY).scalar }
    }

    func settings(steps: Int) -> LockSettings {
        var s = LockSettings()
        s.steps = steps; s.learningRate = 1e-2; s.attackSteps = 4...8; s.attackLearningRate = 1e-3...1e-2
        s.suppressionCap = 2; s.seed = 5
        return s
    }

    func testLockChangesOnlyTheFrozenTensorsAndRaisesTheRestrictedLossAfterAnAttack() throws {
        let problem = Problem(seed: 1)
        let frozen: Set<String> = ["0.weight", "0.bias"]
        let unlocked = mlp(seed: 2), locked = mlp(seed: 2)
        let before = Dictionary(uniqueKeysWithValues: locked.namedParameters().map { ($0.name, $0.parameter.value.scalars) })
        let lock = try GuardLock(model: locked, frozen: frozen, settings: settings(steps: 200))
        var traces: [LockProgress] = []
        try lock.lock(task(locked, problem)) { traces.append($0) }
        XCTAssertEqual(traces.count, 200)
        XCTAssertEqual(traces.map(\.step), Array(1...200))
        for (name, parameter) in locked.namedParameters() {
            if frozen.contains(name) {
                XCTAssertNotEqual(parameter.value.scalars, before[name], "\(name) is in F and should have moved")
            } else {
                XCTAssertEqual(parameter.value.scalars, before[name], "\(name) is outside F and must be bit-identical")
            }
            XCTAssertFalse(parameter.isFrozen, "the lock leaves nothing frozen")
        }
        // The same user attack, longer than any simulated one, on the locked and the unlocked model.
        let withoutLock = try restrictedLossAfterAttack(unlocked, frozen: frozen, problem: problem, steps: 12)
        let withLock = try restrictedLossAfterAttack(locked, frozen: frozen, problem: problem, steps: 12)
        XCTAssertGreaterThan(withLock, 1.5 * withoutLock, "locked \(withLock) vs unlocked \(withoutLock)")
    }

    /// SOPHON's setting: nothing enforced, every tensor locked, every tensor attacked.
    func testUnenforcedLockMovesEveryTensorAndStillRaisesTheRestrictedLossAfterAFullAttack() throws {
        let problem = Problem(seed: 1)
        let unlocked = mlp(seed: 2), locked = mlp(seed: 2)
        let all = Set(locked.namedParameters().map(\.name))
        let before = Dictionary(uniqueKeysWithValues: locked.namedParameters().map { ($0.name, $0.parameter.value.scalars) })
        var s = settings(steps: 200)
        s.enforced = false
        try GuardLock(model: locked, frozen: all, settings: s).lock(task(locked, problem))
        for (name, parameter) in locked.namedParameters() {
            XCTAssertNotEqual(parameter.value.scalars, before[name], "\(name) should have moved")
        }
        // The user may train every tensor: nothing is enforced.
        let withoutLock = try restrictedLossAfterAttack(unlocked, frozen: [], problem: problem, steps: 12)
        let withLock = try restrictedLossAfterAttack(locked, frozen: [], problem: problem, steps: 12)
        XCTAssertGreaterThan(withLock, 3 * withoutLock, "locked \(withLock) vs unlocked \(withoutLock)")
        XCTAssertEqual(s.dictionary["lock_enforced"], "false")
    }

    func testResumedLockEqualsAnUninterruptedOne() throws {
        let problem = Problem(seed: 1)
        let frozen: Set<String> = ["2.weight"]
        var lockSettings = settings(steps: 6)
        lockSettings.checkpointEvery = 2
        let whole = mlp(seed: 3)
        try GuardLock(model: whole, frozen: frozen, settings: lockSettings).lock(task(whole, problem))

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lock-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = mlp(seed: 3)
        try GuardLock(model: first, frozen: frozen, settings: lockSettings).lock(task(first, problem), checkpoint: folder, stoppingAfter: 3)
        // A fresh process: the published model again, F and the optimizer from the checkpoint.
        let second = mlp(seed: 3)
        let resumed = try GuardLock(model: second, frozen: frozen, settings: lockSettings)
        try resumed.resume(from: folder)
        XCTAssertEqual(resumed.step, 3)
        XCTAssertEqual(second.parameter(named: "2.weight")?.value.scalars, first.parameter(named: "2.weight")?.value.scalars)
        try resumed.lock(task(second, problem), checkpoint: folder)
        for ((name, a), (_, b)) in zip(second.namedParameters(), whole.namedParameters()) {
            XCTAssertEqual(a.value.scalars, b.value.scalars, name)
        }
        var other = lockSettings
        other.seed = 6
        XCTAssertThrowsError(try GuardLock(model: mlp(seed: 3), frozen: frozen, settings: other).resume(from: folder)) {
            guard case GuardLockError.unreadableCheckpoint = $0 else { return XCTFail("\($0)") }
        }
    }

    func testPersistentAttackersGoFurtherAndTheirLockResumesExactly() throws {
        let problem = Problem(seed: 1)
        let frozen: Set<String> = ["0.weight", "2.weight"]
        var lockSettings = settings(steps: 12)
        lockSettings.attackers = 2; lockSettings.attackHorizon = 10...30; lockSettings.attackSteps = 4...4
        lockSettings.retainSteps = 2; lockSettings.checkpointEvery = 3
        let whole = mlp(seed: 3)
        let before = Dictionary(uniqueKeysWithValues: whole.namedParameters().map { ($0.name, $0.parameter.value.scalars) })
        var traces: [LockProgress] = []
        try GuardLock(model: whole, frozen: frozen, settings: lockSettings).lock(task(whole, problem)) { traces.append($0) }
        // Two attackers alternate, each continuing where it stopped, 4 steps per outer step.
        XCTAssertEqual(traces.prefix(6).map(\.attackDepth), [4, 4, 8, 8, 12, 12])
        XCTAssertTrue(traces.allSatisfy { $0.attackDepth <= $0.attack.horizon && (10...30).contains($0.attack.horizon) })
        for (name, parameter) in whole.namedParameters() where !frozen.contains(name) {
            XCTAssertEqual(parameter.value.scalars, before[name], "\(name) is outside F and must be bit-identical")
        }

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lock-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = mlp(seed: 3)
        try GuardLock(model: first, frozen: frozen, settings: lockSettings).lock(task(first, problem), checkpoint: folder, stoppingAfter: 7)
        let second = mlp(seed: 3)
        let resumed = try GuardLock(model: second, frozen: frozen, settings: lockSettings)
        try resumed.resume(from: folder)
        XCTAssertEqual(resumed.step, 7)
        var rest: [LockProgress] = []
        try resumed.lock(task(second, problem), checkpoint: folder) { rest.append($0) }
        XCTAssertEqual(rest.map(\.attackDepth), traces.suffix(5).map(\.attackDepth), "the attackers resume where they were")
        XCTAssertEqual(rest.map(\.restrictedLoss), traces.suffix(5).map(\.restrictedLoss))
        for ((name, a), (_, b)) in zip(second.namedParameters(), whole.namedParameters()) {
            XCTAssertEqual(a.value.scalars, b.value.scalars, name)
        }
    }

    func testRetainStepsKeepTheRetainLossLower() throws {
        let problem = Problem(seed: 1)
        let frozen: Set<String> = ["0.weight", "0.bias", "2.weight"]
        func retainLossAfterLock(retainSteps: Int) throws -> Float {
            let model = mlp(seed: 2)
            var s = settings(steps: 60)
            s.retainSteps = retainSteps; s.retainWeight = 0.1
            try GuardLock(model: model, frozen: frozen, settings: s).lock(task(model, problem))
            return GradientRecording.withoutRecording { meanSquaredError(model(problem.retainX), problem.retainY).scalar }
        }
        let without = try retainLossAfterLock(retainSteps: 0), with = try retainLossAfterLock(retainSteps: 3)
        XCTAssertLessThan(with, 0.7 * without, "retain loss with reinforcement \(with), without \(without)")
    }

    func testProximalPullKeepsTheFrozenTensorsNearerTheBase() throws {
        let problem = Problem(seed: 1)
        let frozen: Set<String> = ["0.weight", "0.bias", "2.weight"]
        func distanceAfterLock(proximal: Float?) throws -> Float {
            let model = mlp(seed: 2)
            let before = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, $0.parameter.value) })
            var s = settings(steps: 60)
            s.proximalWeight = proximal
            try GuardLock(model: model, frozen: frozen, settings: s).lock(task(model, problem))
            return model.namedParameters().filter { frozen.contains($0.name) }
                .map { ($0.parameter.value - before[$0.name]!).squared().sum().scalar }.reduce(0, +).squareRoot()
        }
        let free = try distanceAfterLock(proximal: nil), pulled = try distanceAfterLock(proximal: 20)
        XCTAssertGreaterThan(free, 0)
        XCTAssertLessThan(pulled, 0.5 * free, "distance from the base with the pull \(pulled), without \(free)")
    }

    func testRefusesWhatItCannotLock() throws {
        let model = mlp(seed: 1)
        XCTAssertThrowsError(try GuardLock(model: model, frozen: [], settings: LockSettings())) { XCTAssertEqual($0 as? GuardLockError, .emptyFrozenSet) }
        XCTAssertThrowsError(try GuardLock(model: model, frozen: ["9.weight"], settings: LockSettings())) {
            XCTAssertEqual($0 as? GuardLockError, .unknownTensor("9.weight"))
        }
        try model.apply(FreezePlan(frozen: ["0.weight"], isEnforced: true))
        XCTAssertThrowsError(try GuardLock(model: model, frozen: ["2.weight"], settings: LockSettings())) {
            XCTAssertEqual($0 as? GuardLockError, .enforcedTensors(["0.weight"]))
        }
    }

    func testSimulatedAttacksAreSeededAndCoverTheConfiguredRange() {
        var s = LockSettings()
        s.labelVariants = 3
        let attacks = (0..<300).map { s.attack(at: $0) }
        XCTAssertEqual(attacks, (0..<300).map { s.attack(at: $0) }, "a pure function of seed and step")
        XCTAssertEqual(Set(attacks.map(\.optimizer)), Set(SimulatedAttack.OptimizerKind.allCases))
        XCTAssertEqual(Set(attacks.map(\.steps)), Set(3...5))
        XCTAssertEqual(Set(attacks.map(\.labelVariant)), [0, 1, 2])
        for attack in attacks where attack.optimizer != .sgdMomentum {
            XCTAssertTrue((3e-4...3e-3).contains(attack.learningRate), "\(attack)")
        }
        let share = Double(attacks.filter(\.restrictedOnly).count) / 300
        XCTAssertEqual(share, 0.7, accuracy: 0.1)
    }
}

/// A locked diffusion base published with its guard goes through the guarded fine-tuning path unchanged.
final class LockedGuardPublishingTests: XCTestCase {
    func testLockedBaseSignedGuardVerifiesAndFineTuningKeepsTheLockedValues() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("locked-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try UNet2DModel(config: .mnistTiny, seed: 7)
        let original = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, tensorDigest($0.parameter.value)) })
        let frozen = Set(model.namedParameters().map(\.name).filter { $0.hasPrefix("down_blocks.0.") && $0.hasSuffix(".weight") })
        var g = PhiloxGenerator(seed: 4)
        func images(_ labels: [Int]) -> LabeledImages {
            LabeledImages(pixels: (0..<(labels.count * 784)).map { _ in UInt8(truncatingIfNeeded: g.nextUInt32()) }, labels: labels, height: 28, width: 28)
        }
        let restricted = images([10, 11, 12, 10]), permitted = images([6, 7, 8, 9]), retain = images([0, 1, 2, 3])
        var settings = LockSettings()
        settings.steps = 2; settings.attackSteps = 1...2
        let lock = try GuardLock(model: model, frozen: frozen, settings: settings)
        try lock.lock(.diffusion(model: model, restricted: GuardProtocol.labelVariants(of: restricted, permittedSlots: [6, 7, 8]),
                                 permitted: permitted, retain: retain, batchSize: 2, seed: 1))
        for (name, parameter) in model.namedParameters() {
            XCTAssertEqual(tensorDigest(parameter.value) == original[name], !frozen.contains(name), name)
        }

        let key = Curve25519.Signing.PrivateKey()
        let base = folder.appendingPathComponent("locked-base")
        let manifest = try GuardManifest.publishLocked(model, frozen: frozen, to: base, settings: settings.dictionary, signingKey: key)
        let publicKey = key.publicKey.rawRepresentation.base64EncodedString()
        XCTAssertNoThrow(try manifest.verifySignature(trustedKey: publicKey))
        XCTAssertNoThrow(try manifest.verifyBase(base.appendingPathComponent(UNet2DModel.weightsFileName)))
        XCTAssertEqual(manifest.settings["locked"], "true")

        let run = try GuardedFineTune(base: try GuardedFineTune.Base(directory: base), guard: manifest, trustedPublisherKey: publicKey,
                                      data: restricted, settings: FineTuneSettings(steps: 3, batchSize: 2))
        let report = try run.run()
        XCTAssertEqual(report.guardedTensorsBitIdentical, true)
        for name in frozen { XCTAssertEqual(tensorDigest(run.model.parameter(named: name)!.value), manifest.frozenSHA256[name]) }
    }
}

/// Selections other than the learnt mask: a seeded random ranking, and first-order attribution.
final class GuardSelectionTests: XCTestCase {
    func testRandomRankingIsSeeded() {
        let names = (0..<40).map { "t\($0)" }
        let a = GuardSelection.randomMask(names: names, seed: 1), b = GuardSelection.randomMask(names: names, seed: 1)
        let c = GuardSelection.randomMask(names: names, seed: 2)
        XCTAssertEqual(a.rankedNames, b.rankedNames)
        XCTAssertNotEqual(a.rankedNames, c.rankedNames)
        XCTAssertNotEqual(a.rankedNames, names, "a ranking, not the model's order")
        let sizes = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, $0.offset + 1) })
        let frozen = a.frozen(ratio: 0.3, sizes: sizes)
        let share = Double(frozen.reduce(0) { $0 + sizes[$1]! }) / Double(sizes.values.reduce(0, +))
        XCTAssertGreaterThanOrEqual(share, 0.3)
    }

    /// The score predicts what holding a tensor at its published value does to a relearnt model:
    /// the top-ranked tensor, put back, raises L_restricted − λ·L_permitted per parameter more than
    /// the bottom-ranked one (measured, not first-order).
    func testAttributionRanksByWhatHoldingATensorBackCosts() throws {
        var g = PhiloxGenerator(seed: 4)
        func images(_ labels: [Int]) -> LabeledImages {
            LabeledImages(pixels: (0..<(labels.count * 784)).map { _ in UInt8(truncatingIfNeeded: g.nextUInt32() & 0x80 == 0 ? 0 : 255) },
                          labels: labels, height: 28, width: 28)
        }
        let restricted = images([10, 11, 12, 10, 11, 12, 10, 11]), permitted = images([6, 7, 8, 9, 6, 7, 8, 9])
        let published = try UNet2DModel(config: .mnistTiny, seed: 7), relearnt = try UNet2DModel(config: .mnistTiny, seed: 7)
        var settings = GuardSelection.AttributionSettings()
        settings.relearnSteps = 8; settings.batchSize = 4; settings.gradientBatches = 2; settings.learningRate = 1e-2
        let mask = try GuardSelection.attributionMask(model: relearnt, published: published, restricted: restricted, permitted: permitted, settings: settings)
        XCTAssertEqual(Set(mask.names), Set(published.namedParameters().map(\.name)))
        XCTAssertEqual(mask.softMask.max(), 1); XCTAssertEqual(mask.softMask.min(), 0)

        let schedule = NoiseSchedule()
        func objective() -> Float {
            GradientRecording.withoutRecording {
                (0..<settings.gradientBatches).reduce(Float(0)) { sum, k in
                    let stream = UInt64(1_000_000 + 2 * k)
                    return sum + epsilonPredictionLoss(relearnt, data: restricted, schedule: schedule, batchSize: 4, seed: 0, stream: stream).scalar
                        - epsilonPredictionLoss(relearnt, data: permitted, schedule: schedule, batchSize: 4, seed: 0, stream: stream + 1).scalar
                }
            }
        }
        func changePerParameter(restoring name: String) -> Float {
            let parameter = relearnt.parameter(named: name)!, kept = parameter.value
            let before = objective()
            parameter.value = published.parameter(named: name)!.value
            defer { parameter.value = kept }
            return (objective() - before) / Float(kept.count)
        }
        let ranked = mask.rankedNames
        let top = changePerParameter(restoring: ranked.first!), bottom = changePerParameter(restoring: ranked.last!)
        XCTAssertGreaterThan(top, 0, "holding the top tensor back should cost the restricted objective")
        XCTAssertGreaterThan(top, bottom)
    }
}
