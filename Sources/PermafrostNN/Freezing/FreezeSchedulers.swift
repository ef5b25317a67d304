import Foundation
import PermafrostTensor

/// Decides the frozen set before each training step. A publisher's enforced guard is always kept:
/// schedulers' plans are applied with ``Module/replaceFreezing(with:)``, which never unfreezes an
/// enforced tensor, so a scheduler can freeze more, never less.
public protocol FreezeScheduler: AnyObject {
    /// The plan for `step` (0-based), given the model as it is before the step.
    func plan(step: Int, model: Module) -> FreezePlan
    /// Tensors that, from `step` on, this scheduler will never train again. Their optimizer state
    /// is released; a tensor frozen only for a while (SlimFit) keeps its moments, so it resumes
    /// where it was when it rejoins training.
    func permanentlyFrozen(step: Int) -> Set<String>
}

extension FreezeScheduler {
    public func permanentlyFrozen(step: Int) -> Set<String> { [] }
}

extension Module {
    /// Applies `scheduler`'s plan for `step` (guards stay frozen). With `optimizer`, the state of
    /// tensors frozen for good — by the scheduler or by an enforced guard — is released.
    public func applySchedule(_ scheduler: FreezeScheduler, step: Int, optimizer: Optimizer? = nil) throws(FreezeError) {
        try replaceFreezing(with: scheduler.plan(step: step, model: self))
        if let optimizer {
            let forGood = scheduler.permanentlyFrozen(step: step).union(namedParameters().filter { $0.parameter.isEnforced }.map(\.name))
            let held = optimizer.tensorsWithState.intersection(forGood)
            if !held.isEmpty { optimizer.releaseState(for: held) }
        }
    }
}

/// A fixed plan at every step.
public final class StaticFreezeScheduler: FreezeScheduler {
    public let fixed: FreezePlan
    public init(_ plan: FreezePlan) { fixed = plan }
    public func plan(step: Int, model: Module) -> FreezePlan { fixed }
    public func permanentlyFrozen(step: Int) -> Set<String> { fixed.frozen }
}

/// A list of `(steps, plan)` stages, e.g. Met2Net's "freeze the translator", then "freeze the
/// encoders and decoders". After the last stage its plan stays.
public final class StagedFreezeScheduler: FreezeScheduler {
    public let stages: [(steps: Int, plan: FreezePlan)]
    public init(stages: [(steps: Int, plan: FreezePlan)]) {
        precondition(!stages.isEmpty && stages.allSatisfy { $0.steps > 0 }, "stages need positive lengths")
        self.stages = stages
    }
    public func plan(step: Int, model: Module) -> FreezePlan {
        var end = 0
        for stage in stages {
            end += stage.steps
            if step < end { return stage.plan }
        }
        return stages.last!.plan
    }

    /// Once the last stage has begun, its whole-tensor freezes are final.
    public func permanentlyFrozen(step: Int) -> Set<String> {
        step >= stages.dropLast().reduce(0) { $0 + $1.steps } ? stages.last!.plan.frozen : []
    }
}

/// SlimFit (arXiv 2305.18513): freeze the least-contributory tensors on the fly.
///
/// Candidates are weight tensors with ≥ 2 dimensions and normalisation weights; biases always train.
/// A tensor's score is its relative change `‖w − w_last‖ / ‖w_last‖` since it last trained (scores
/// start at +∞, so every tensor trains early). Before each step the lowest-scoring `budget` fraction
/// of candidates is frozen; only tensors that trained in the previous step get new scores.
///
/// Optimizer moments of a tensor the scheduler freezes are kept (it usually rejoins training soon);
/// gradients and activations are what the frozen steps save.
public final class SlimFitScheduler: FreezeScheduler {
    public let budget: Double
    /// Re-plan every `interval` steps.
    public let interval: Int
    public private(set) var scores: [String: Double] = [:]
    private var snapshots: [String: Tensor] = [:]
    private var trainedLastStep: Set<String> = []
    private var current = FreezePlan()

    /// Tensors the scheduler never freezes: a task head that starts untrained (SlimFit's reference
    /// code leaves `classifier.weight` out of its candidates for the same reason — a new head frozen
    /// for most steps learns the new classes far too slowly).
    public let alwaysTrained: Set<String>

    public init(budget: Double, interval: Int = 1, alwaysTrained: Set<String> = []) {
        precondition(budget >= 0 && budget < 1, "freeze budget must be in [0, 1), got \(budget)")
        precondition(interval > 0, "interval must be positive")
        self.budget = budget
        self.interval = interval
        self.alwaysTrained = alwaysTrained
    }

    /// Weight tensors (≥ 2 dimensions) and normalisation weights (the 1-D tensors named `weight`:
    /// group/layer/batch-norm scales); never biases.
    public static func isCandidate(name: String, shape: [Int]) -> Bool {
        if name.hasSuffix(".bias") || name == "bias" { return false }
        if shape.count >= 2 { return true }
        return name.hasSuffix("weight")
    }

    public func plan(step: Int, model: Module) -> FreezePlan {
        let parameters = model.namedParameters()
        // Score the tensors that just trained, and snapshot them.
        for (name, parameter) in parameters where Self.isCandidate(name: name, shape: parameter.shape) && !alwaysTrained.contains(name) {
            guard let previous = snapshots[name] else {
                snapshots[name] = parameter.value.detached()
                scores[name] = .infinity
                continue
            }
            guard trainedLastStep.contains(name) else { continue }
            var difference = 0.0, norm = 0.0
            parameter.value.withUnsafeBufferPointer { now in
                previous.withUnsafeBufferPointer { before in
                    for i in 0..<now.count {
                        let d = Double(now[i] - before[i])
                        difference += d * d
                        norm += Double(before[i]) * Double(before[i])
                    }
                }
            }
            scores[name] = difference.squareRoot() / Swift.max(norm.squareRoot(), 1e-12)
            snapshots[name] = parameter.value.detached()
        }
        if step % interval == 0 {
            let candidates = parameters.filter {
                Self.isCandidate(name: $0.name, shape: $0.parameter.shape) && !$0.parameter.isEnforced && !alwaysTrained.contains($0.name)
            }.map(\.name)
            let ranked = candidates.sorted { (scores[$0] ?? .infinity, $0) < (scores[$1] ?? .infinity, $1) }
            current = FreezePlan(frozen: Set(ranked.prefix(Int(budget * Double(candidates.count)))))
        }
        trainedLastStep = Set(parameters.map(\.name)).subtracting(current.frozen)
            .subtracting(parameters.filter { $0.parameter.isEnforced }.map(\.name))
        return current
    }
}

/// Another scheduler's plan plus a fixed plan (a user's own frozen tensors).
public final class UnionFreezeScheduler: FreezeScheduler {
    public let base: FreezeScheduler
    public let extra: FreezePlan
    public init(_ base: FreezeScheduler, plus extra: FreezePlan) { self.base = base; self.extra = extra }
    public func plan(step: Int, model: Module) -> FreezePlan { base.plan(step: step, model: model).union(extra) }
    public func permanentlyFrozen(step: Int) -> Set<String> { base.permanentlyFrozen(step: step).union(extra.frozen) }
}
