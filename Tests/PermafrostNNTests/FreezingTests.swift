import Foundation
import XCTest
@testable import PermafrostNN
import PermafrostIO
import PermafrostTensor

final class FreezePlanTests: XCTestCase {
    func testNamesFollowPyTorchStateDictKeys() {
        var g = PhiloxGenerator(seed: 0)
        let attention = MultiheadAttention(embedDimension: 8, heads: 2, generator: &g)
        XCTAssertEqual(attention.namedParameters().map(\.name), ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"])
        XCTAssertEqual(fixtureCNN().namedParameters().map(\.name),
                       ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias", "7.weight", "7.bias"])
    }

    func testFreezeByNameGlobAndSubtree() throws {
        let model = fixtureCNN()
        XCTAssertEqual(try model.freeze(matching: "*.bias"), ["0.bias", "1.bias", "3.bias", "7.bias"])
        try model.freeze(subtree: "3")
        XCTAssertEqual(Set(model.frozenParameters().map(\.name)), ["0.bias", "1.bias", "3.bias", "7.bias", "3.weight"])
        try model.unfreeze(names: ["0.bias"])
        XCTAssertEqual(model.trainableParameters().map(\.name), ["0.weight", "0.bias", "1.weight", "7.weight"])
        XCTAssertTrue(Glob.matches("down_blocks.0.resnets.1.conv1.weight", pattern: "down_blocks.*.resnets.*"))
        XCTAssertFalse(Glob.matches("up_blocks.0.resnets.1.conv1.weight", pattern: "down_blocks.*.resnets.*"))
        XCTAssertTrue(Glob.matches("a.b", pattern: "a.?"))
    }

    func testUnknownNamesAreErrorsListingTheClosestAndChangeNothing() {
        let model = fixtureCNN()
        XCTAssertThrowsError(try model.apply(FreezePlan(frozen: ["0.weight", "3.wieght"]))) { error in
            XCTAssertEqual(error as? FreezeError, .unknownTensor(name: "3.wieght", closest: ["3.weight", "0.weight", "1.weight"]))
            XCTAssert("\(error)".contains("closest names: '3.weight'"))
        }
        XCTAssertTrue(model.frozenParameters().isEmpty, "a failed plan must not half-apply")
        XCTAssertThrowsError(try model.freeze(matching: "down_blocks.*")) { error in
            guard case .patternMatchedNothing? = error as? FreezeError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try model.freeze(subtree: "9"))
    }

    func testPlansRoundTripThroughJSONAndCombineByUnion() throws {
        let a = FreezePlan(frozen: ["x.weight", "y.bias"], frozenRows: ["embed.weight": [0..<100]])
        let b = FreezePlan(frozen: ["z.weight"], isEnforced: true)
        let data = try JSONEncoder().encode(a)
        XCTAssertEqual(String(decoding: data, as: UTF8.self).contains("\"frozen_rows\""), true)
        XCTAssertEqual(try JSONDecoder().decode(FreezePlan.self, from: data), a)
        let union = a.union(b)
        XCTAssertEqual(union.frozen, ["x.weight", "y.bias", "z.weight"])
        XCTAssertTrue(union.isEnforced)
        XCTAssertThrowsError(try JSONDecoder().decode(FreezePlan.self, from: Data(#"{"frozen":[],"frozen_rows":{"e":[[5,2]]}}"#.utf8)))
    }

    func testEnforcedPlansCanNeverBeNarrowed() throws {
        let model = fixtureMLP()
        try model.apply(FreezePlan(frozen: ["0.weight", "2.weight"], isEnforced: true))
        XCTAssertThrowsError(try model.unfreeze(names: ["0.weight"])) { error in
            XCTAssertEqual(error as? FreezeError, .enforcedTensor(name: "0.weight"))
        }
        XCTAssertThrowsError(try model.unfreeze(matching: "*"))
        XCTAssertTrue(model.parameter(named: "0.weight")!.isFrozen)
        // Switching to a plan that omits the guarded tensors keeps them frozen.
        try model.replaceFreezing(with: FreezePlan(frozen: ["4.bias"]))
        XCTAssertEqual(Set(model.frozenParameters().map(\.name)), ["0.weight", "2.weight", "4.bias"])
        XCTAssertTrue(model.freezePlan.isEnforced)
    }
}

final class OptimizerTests: XCTestCase {
    func makeModel() -> (Sequential, Tensor, [Int]) {
        var g = PhiloxGenerator(seed: 3)
        let model = Sequential([Linear(6, 5, generator: &g), ReLU(), Linear(5, 3, generator: &g)])
        return (model, Tensor(randomNormal: [8, 6], generator: &g), (0..<8).map { $0 % 3 })
    }

    /// Frozen tensors never change, bitwise, under every optimizer with weight decay, and get no state.
    func testFrozenTensorsNeverChangeUnderAnyOptimizer() throws {
        let optimizers: [() -> Optimizer] = [
            { SGD(learningRate: 0.1, weightDecay: 0.5) }, { SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.5, nesterov: true) },
            { Adam(learningRate: 0.05, weightDecay: 0.5) }, { Adam.adamW(learningRate: 0.05, weightDecay: 0.5) },
        ]
        for make in optimizers {
            let (model, x, labels) = makeModel()
            try model.freeze(names: ["0.weight", "2.bias"])
            let before = model.stateDictionary().map { ($0.name, $0.tensor.scalars.map(\.bitPattern)) }
            let optimizer = make()
            for _ in 0..<4 { _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: labels) } }
            for ((name, bits), parameter) in zip(before, model.namedParameters().map(\.parameter)) {
                if ["0.weight", "2.bias"].contains(name) {
                    XCTAssertEqual(parameter.value.scalars.map(\.bitPattern), bits, "\(type(of: optimizer)) changed frozen \(name)")
                } else {
                    XCTAssertNotEqual(parameter.value.scalars.map(\.bitPattern), bits, "\(name) should train")
                }
            }
            XCTAssertTrue(optimizer.tensorsWithState.isDisjoint(with: ["0.weight", "2.bias"]))
            // Even a gradient handed in for a frozen tensor is ignored.
            try optimizer.step(model, gradients: ["0.weight": Tensor.ones([5, 6])])
            XCTAssertEqual(model.parameter(named: "0.weight")!.value.scalars.map(\.bitPattern), before[0].1)
        }
    }

    func testFrozenRowsStayBitIdentical() throws {
        var g = PhiloxGenerator(seed: 4)
        let embedding = Embedding(10, 4, generator: &g)
        try embedding.apply(FreezePlan(frozenRows: ["weight": [0..<8]]))
        let before = embedding.weight.value.scalars
        let optimizer = Adam.adamW(learningRate: 0.1, weightDecay: 0.5)
        for _ in 0..<3 {
            _ = try embedding.trainingStep(optimizer: optimizer) { embedding([1, 8, 9, 2]).squared().sum() }
        }
        let after = embedding.weight.value.scalars
        XCTAssertEqual(Array(after[0..<32]).map(\.bitPattern), Array(before[0..<32]).map(\.bitPattern), "rows 0..<8 are frozen")
        XCTAssertNotEqual(Array(after[32..<40]), Array(before[32..<40]), "row 8 trains")
    }

    func testSGDMatchesTheUpdateRuleByHand() throws {
        // One parameter, gradient 2·p (loss p²): heavy-ball and Nesterov momentum with L2 decay, computed in Double.
        for nesterov in [false, true] {
            let module = Module()
            let p = Parameter(Tensor(shape: [2], scalars: [1.5, -0.5]))
            module.register("p", p)
            let optimizer = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: nesterov)
            var reference: [Double] = [1.5, -0.5], buffer: [Double] = [0, 0]
            for step in 0..<3 {
                _ = try module.trainingStep(optimizer: optimizer) { p.value.squared().sum() }
                for i in 0..<2 {
                    let d = 2 * reference[i] + 0.01 * reference[i]
                    buffer[i] = step == 0 ? d : 0.9 * buffer[i] + d
                    reference[i] -= 0.1 * (nesterov ? d + 0.9 * buffer[i] : buffer[i])
                }
            }
            XCTAssertEqual(Double(p.value.scalars[0]), reference[0], accuracy: 1e-6)
            XCTAssertEqual(Double(p.value.scalars[1]), reference[1], accuracy: 1e-6)
        }
    }

    func testClippingAndSchedules() {
        var gradients = ["a": Tensor(shape: [2], scalars: [3, 4]), "b": Tensor(shape: [1], scalars: [12])]
        XCTAssertEqual(clipGradientNorm(&gradients, maxNorm: 6.5), 13)
        XCTAssertEqual(gradients["a"]!.scalars[0], 1.5, accuracy: 1e-5)
        XCTAssertEqual(gradients["b"]!.scalars[0], 6, accuracy: 1e-5)
        XCTAssertEqual(LearningRateSchedule.linearWarmup(peak: 1, warmupSteps: 4).rate(atStep: 1), 0.5)
        XCTAssertEqual(LearningRateSchedule.linearWarmup(peak: 1, warmupSteps: 4).rate(atStep: 10), 1)
        let cosine = LearningRateSchedule.cosine(peak: 1, minimum: 0.1, warmupSteps: 0, totalSteps: 10)
        XCTAssertEqual(cosine.rate(atStep: 0), 1, accuracy: 1e-6)
        XCTAssertEqual(cosine.rate(atStep: 5), 0.55, accuracy: 1e-6)
        XCTAssertEqual(cosine.rate(atStep: 10), 0.1, accuracy: 1e-6)
    }

    func testNonFiniteLossIsRefusedAndChangesNothing() throws {
        let (model, x, labels) = makeModel()
        let before = model.stateDictionary().map { $0.tensor.scalars }
        let optimizer = Adam.adamW()
        XCTAssertThrowsError(try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: labels) * Float.nan }) { error in
            guard case .nonFiniteLoss? = error as? TrainingError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(model.stateDictionary().map { $0.tensor.scalars }, before)
        XCTAssertThrowsError(try optimizer.step(model, gradients: ["0.weight": Tensor.ones([2, 2])])) { error in
            XCTAssertEqual(error as? OptimizerError, .shapeMismatch(name: "0.weight", parameter: [5, 6], gradient: [2, 2]))
        }
        XCTAssertThrowsError(try optimizer.step(model, gradients: ["0.weight": Tensor(repeating: .nan, shape: [5, 6])]))
        XCTAssertEqual(model.stateDictionary().map { $0.tensor.scalars }, before)
    }
}

final class MemoryAccountingTests: XCTestCase {
    /// With ~80% of an MLP's tensors frozen, gradient and optimizer bytes fall in proportion to the
    /// trainable parameters, and activations kept for backward shrink.
    func testFreezingShrinksGradientOptimizerAndActivationBytes() throws {
        func report(frozen: Int) throws -> (MemoryReport, Int) {
            var g = PhiloxGenerator(seed: 5)
            let model = Sequential([Linear(64, 128, generator: &g), ReLU(), Linear(128, 128, generator: &g), ReLU(),
                                    Linear(128, 128, generator: &g), ReLU(), Linear(128, 128, generator: &g), ReLU(),
                                    Linear(128, 10, generator: &g)])
            try model.freeze(names: Array(model.namedParameters().map(\.name).prefix(frozen)))
            let x = Tensor(randomNormal: [32, 64], generator: &g)
            let optimizer = Adam.adamW()
            let result = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: (0..<32).map { $0 % 10 }) }
            let trainable = model.trainableParameters().reduce(0) { $0 + $1.parameter.value.count }
            return (result.memory, trainable)
        }
        let (full, allTrainable) = try report(frozen: 0)
        let (frozen, trainable) = try report(frozen: 8) // 8 of 10 tensors
        XCTAssertEqual(full.parameterBytes, frozen.parameterBytes)
        XCTAssertEqual(full.gradientBytes, allTrainable * 4)
        XCTAssertEqual(frozen.gradientBytes, trainable * 4)
        XCTAssertEqual(full.optimizerStateBytes, allTrainable * 8)
        XCTAssertEqual(frozen.optimizerStateBytes, trainable * 8)
        XCTAssertEqual(trainable, 128 * 10 + 10)
        XCTAssertLessThan(frozen.activationBytes, full.activationBytes / 2, "frozen layers fed by frozen layers keep no activations")
        XCTAssertLessThan(frozen.peakBytes, full.peakBytes)
    }
}

final class DeltaCheckpointTests: XCTestCase {
    func testDeltaHoldsOnlyTrainableTensorsAndIsTiedToItsBase() throws {
        let directory = temporaryDirectory()
        let baseURL = directory.appendingPathComponent("base.safetensors"), deltaURL = directory.appendingPathComponent("delta.safetensors")
        let model = fixtureMLP()
        try model.save(to: baseURL)
        try model.freeze(names: ["0.weight", "0.bias", "2.weight"])
        var g = PhiloxGenerator(seed: 6)
        let x = Tensor(randomNormal: [4, 12], generator: &g)
        let optimizer = Adam.adamW(learningRate: 0.05)
        for _ in 0..<3 { _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: [0, 1, 2, 3]) } }
        try DeltaCheckpoint.save(model, baseDigest: try sha256Hex(of: baseURL), to: deltaURL)
        XCTAssertEqual(try SafetensorsFile(contentsOf: deltaURL).names, ["2.bias", "4.bias", "4.weight"])

        let restored = fixtureMLP()
        try DeltaCheckpoint.load(base: baseURL, delta: deltaURL, into: restored)
        for ((_, a), (_, b)) in zip(restored.stateDictionary(), model.stateDictionary()) { XCTAssertEqual(a.scalars, b.scalars) }

        // Another base: refused, and the model is untouched.
        let otherBase = directory.appendingPathComponent("other.safetensors")
        var h = PhiloxGenerator(seed: 99)
        let other = Sequential([Linear(12, 16, generator: &h), ReLU(), Linear(16, 8, generator: &h), GELU(), Linear(8, 4, generator: &h)])
        try other.save(to: otherBase)
        let victim = fixtureMLP()
        let before = victim.stateDictionary().map { $0.tensor.scalars }
        XCTAssertThrowsError(try DeltaCheckpoint.load(base: otherBase, delta: deltaURL, into: victim)) { error in
            guard case .baseDigestMismatch? = error as? CheckpointError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(victim.stateDictionary().map { $0.tensor.scalars }, before)
        XCTAssertThrowsError(try DeltaCheckpoint.load(base: baseURL, delta: baseURL, into: victim)) { error in
            guard case .notADelta? = error as? CheckpointError else { return XCTFail("\(error)") }
        }
    }

    func testLoadingRejectsUnknownMissingAndMisshapenTensors() throws {
        let directory = temporaryDirectory()
        let url = directory.appendingPathComponent("x.safetensors")
        try SafetensorsWriter.write([("0.weight", Tensor.zeros([16, 12])), ("0.bais", Tensor.zeros([16]))], to: url)
        let model = fixtureMLP()
        let before = model.stateDictionary().map { $0.tensor.scalars }
        XCTAssertThrowsError(try model.load(contentsOf: url)) { error in
            XCTAssertEqual(error as? CheckpointError, .unknownTensor(name: "0.bais", closest: ["0.bias", "2.bias", "4.bias"]))
        }
        try SafetensorsWriter.write([("0.weight", Tensor.zeros([12, 16]))], to: url)
        XCTAssertThrowsError(try model.load(contentsOf: url)) { error in
            XCTAssertEqual(error as? CheckpointError, .shapeMismatch(name: "0.weight", model: [16, 12], checkpoint: [12, 16]))
        }
        try SafetensorsWriter.write([("0.weight", Tensor.zeros([16, 12]))], to: url)
        XCTAssertThrowsError(try model.load(contentsOf: url)) { error in
            guard case let .missingTensors(names)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(names.count, 5)
        }
        XCTAssertEqual(model.stateDictionary().map { $0.tensor.scalars }, before, "failed loads change nothing")
        try model.load(contentsOf: url, strict: false)
        XCTAssertEqual(model.parameter(named: "0.weight")!.value.scalars, [Float](repeating: 0, count: 192))
    }
}
