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
}
