import Foundation
import XCTest
import PermafrostNN
import PermafrostTensor

final class FreezeSchedulerTests: XCTestCase {
    func makeModel() -> Sequential {
        var g = PhiloxGenerator(seed: 8)
        return Sequential([Linear(6, 16, generator: &g), LayerNorm([16]), ReLU(), Linear(16, 16, generator: &g), ReLU(), Linear(16, 3, generator: &g)])
    }

    /// Under every scheduler, a tensor frozen at a step is bit-identical after it (AdamW with weight
    /// decay), guarded tensors never change, and biases always train under SlimFit.
    func testFrozenTensorsNeverChangeUnderSchedulers() throws {
        var g = PhiloxGenerator(seed: 9)
        let x = Tensor(randomNormal: [24, 6], generator: &g)
        let labels = (0..<24).map { $0 % 3 }
        let schedulers: [() -> FreezeScheduler] = [
            { SlimFitScheduler(budget: 0.5) },
            { StaticFreezeScheduler(FreezePlan(frozen: ["3.weight"])) },
            { StagedFreezeScheduler(stages: [(3, FreezePlan(frozen: ["0.weight", "0.bias"])), (3, FreezePlan(frozen: ["5.weight"]))]) },
        ]
        for make in schedulers {
            let model = makeModel()
            try model.apply(FreezePlan(frozen: ["1.weight"], isEnforced: true)) // a publisher's guard
            let guarded = model.parameter(named: "1.weight")!.value.scalars
            let scheduler = make()
            let optimizer = Adam.adamW(learningRate: 0.05, weightDecay: 0.2)
            var frozenSeen = Set<String>()
            for step in 0..<8 {
                try model.applySchedule(scheduler, step: step)
                XCTAssertTrue(model.parameter(named: "1.weight")!.isFrozen, "the guard stays frozen")
                let frozen = model.frozenParameters().map(\.name)
                frozenSeen.formUnion(frozen)
                let before = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, $0.parameter.value.scalars.map(\.bitPattern)) })
                _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: labels) }
                for name in frozen {
                    XCTAssertEqual(model.parameter(named: name)!.value.scalars.map(\.bitPattern), before[name], "\(type(of: scheduler)) step \(step): frozen \(name) changed")
                }
                if scheduler is SlimFitScheduler {
                    XCTAssertFalse(frozen.contains { $0.hasSuffix(".bias") }, "SlimFit never freezes biases")
                }
            }
            XCTAssertEqual(model.parameter(named: "1.weight")!.value.scalars, guarded)
            XCTAssertGreaterThan(frozenSeen.count, 1)
        }
    }

    func testSlimFitFreezesTheBudgetOfLeastChangedTensors() throws {
        let model = makeModel()
        let scheduler = SlimFitScheduler(budget: 0.6)
        // Candidates: 0.weight, 1.weight (norm), 3.weight, 5.weight → 2 of 4 frozen (floor 0.6·4).
        var plan = scheduler.plan(step: 0, model: model)
        XCTAssertEqual(plan.frozen.count, 2)
        // Move only 3.weight a lot and 5.weight a little: after they train, the scores rank them.
        try model.replaceFreezing(with: plan)
        for (name, delta) in [("3.weight", Float(0.5)), ("5.weight", Float(0.001)), ("0.weight", 0.2), ("1.weight", 0.3)] {
            model.parameter(named: name)!.value = model.parameter(named: name)!.value + delta
        }
        plan = scheduler.plan(step: 1, model: model)
        for name in plan.frozen { XCTAssert(scheduler.scores[name]! <= scheduler.scores.filter { !plan.frozen.contains($0.key) }.values.min()!) }
        XCTAssertTrue(SlimFitScheduler.isCandidate(name: "down.norm1.weight", shape: [32]))
        XCTAssertFalse(SlimFitScheduler.isCandidate(name: "down.conv.bias", shape: [32]))
    }

    /// A task head named in `alwaysTrained` is never frozen and never scored; the budget counts the
    /// other candidates only.
    func testSlimFitNeverFreezesAlwaysTrainedTensors() throws {
        let model = makeModel()
        let scheduler = SlimFitScheduler(budget: 0.75, alwaysTrained: ["5.weight"])
        for step in 0..<6 {
            let plan = scheduler.plan(step: step, model: model)
            XCTAssertFalse(plan.frozen.contains("5.weight"), "step \(step)")
            XCTAssertEqual(plan.frozen.count, 2, "floor(0.75 · 3 other candidates)")
            try model.replaceFreezing(with: plan)
            for (name, parameter) in model.namedParameters() where !plan.frozen.contains(name) { parameter.value = parameter.value * 1.01 }
        }
        XCTAssertNil(scheduler.scores["5.weight"])
    }

    /// Tensors frozen for good (a staged scheduler's last stage, a static plan, an enforced guard)
    /// lose their optimizer state; tensors SlimFit freezes for a while keep theirs.
    func testOptimizerStateIsReleasedOnlyForTensorsFrozenForGood() throws {
        var g = PhiloxGenerator(seed: 10)
        let x = Tensor(randomNormal: [24, 6], generator: &g)
        let labels = (0..<24).map { $0 % 3 }
        let model = makeModel()
        let staged = StagedFreezeScheduler(stages: [(2, FreezePlan()), (3, FreezePlan(frozen: ["0.weight", "3.weight"]))])
        let optimizer = Adam.adamW(learningRate: 0.01, weightDecay: 0.1)
        var bytes: [Int] = []
        for step in 0..<5 {
            try model.applySchedule(staged, step: step, optimizer: optimizer)
            _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: labels) }
            bytes.append(optimizer.stateBytes)
            if step < 2 { XCTAssertTrue(optimizer.tensorsWithState.isSuperset(of: ["0.weight", "3.weight"])) }
            else { XCTAssertTrue(optimizer.tensorsWithState.isDisjoint(with: ["0.weight", "3.weight"]), "step \(step)") }
        }
        XCTAssertEqual(bytes[1] - bytes[2], 2 * 4 * (6 * 16 + 16 * 16), "both moments of both weights released")
        XCTAssertEqual(staged.permanentlyFrozen(step: 1), [])
        XCTAssertEqual(staged.permanentlyFrozen(step: 2), ["0.weight", "3.weight"])

        // SlimFit: a tensor it freezes keeps its moments for when it rejoins.
        let slim = SlimFitScheduler(budget: 0.5)
        let other = makeModel()
        let adam = Adam.adamW(learningRate: 0.01, weightDecay: 0.1)
        var everFrozen = Set<String>()
        for step in 0..<6 {
            try other.applySchedule(slim, step: step, optimizer: adam)
            everFrozen.formUnion(other.frozenParameters().map(\.name))
            _ = try other.trainingStep(optimizer: adam) { crossEntropy(logits: other(x), labels: labels) }
        }
        XCTAssertFalse(everFrozen.isEmpty)
        XCTAssertEqual(slim.permanentlyFrozen(step: 5), [])
        XCTAssertTrue(adam.tensorsWithState.isSuperset(of: everFrozen), "SlimFit-frozen tensors keep their moments")
    }
}
