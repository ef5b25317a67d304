import Foundation
import PermafrostNN
import PermafrostTensor

/// Settings of FreezeAsGuard mask learning (arXiv 2405.17472), defaults from the paper's code.
public struct GuardSettings: Codable, Sendable, Equatable {
    /// Temperature T of the soft mask m = sigmoid(x / T).
    public var temperature: Float = 0.2
    /// Target fraction frozen (of tensors, or of parameters with `weightByParameters`).
    public var freezeRatio: Float = 0.5
    /// Weight c of the sparsity term c·(ratio − mean(m))².
    public var sparsityWeight: Float = 500
    /// Rate of the mask logits' updates (Adam when `maskAdam`, plain gradient descent otherwise).
    public var maskLearningRate: Float = 0.1
    /// Update the mask logits with Adam (scale-free: the same rate works for any model size) instead
    /// of the paper's plain gradient descent (whose rate, 3e2 there, must be retuned per model).
    public var maskAdam = true
    /// Adam rate of the simulated user's fine-tuning.
    public var userLearningRate: Float = 1e-3
    /// Every `userInterval`-th step is a publisher (mask) step; the others are user steps.
    public var userInterval = 5
    public var steps = 200
    public var seed: UInt64 = 0
    /// Measure the freeze ratio by parameter count instead of tensor count (the paper counts tensors).
    public var weightByParameters = false
    /// How the learner holds the mask at its target ratio.
    public var ratioControl: RatioControl = .penalty
    public init() {}

    /// How the learner holds the mask at its target ratio.
    public enum RatioControl: String, Codable, Sendable, CaseIterable {
        /// The paper's penalty `c·(ratio − mean(m))²`, logits updated by `maskAdam`'s rule.
        case penalty
        /// An exact projection: one shared offset b, solved by bisection before every step, makes the
        /// weighted mean of `sigmoid((x + b)/T)` equal the ratio, so the loss alone ranks the tensors.
        /// Logits move by normalised gradient descent (`x −= lr·g/rms(g)`): one global scale, so the
        /// relative sizes of the gradients survive. Why: with the penalty, the ratio term moves every
        /// logit together and Adam's per-coordinate normalisation moves each at the same speed, so
        /// after a short run the soft mask is flat (seen: every tensor within a few hundredths of
        /// the ratio) and a ranking cut of it carries little of what the losses said.
        case projection
    }

    public var dictionary: [String: String] {
        ["temperature": "\(temperature)", "freeze_ratio": "\(freezeRatio)", "sparsity_weight": "\(sparsityWeight)",
         "mask_lr": "\(maskLearningRate)", "mask_optimizer": maskAdam ? "adam" : "sgd", "user_lr": "\(userLearningRate)", "user_interval": "\(userInterval)",
         "steps": "\(steps)", "seed": "\(seed)", "ratio_by": weightByParameters ? "parameters" : "tensors",
         "ratio_control": ratioControl.rawValue]
    }
}

/// One report of the learning loop.
public struct GuardProgress: Sendable {
    public var step: Int
    public var totalSteps: Int
    /// Latest losses of the simulated fine-tuned model on restricted and permitted data.
    public var restrictedLoss: Float
    public var permittedLoss: Float
    /// Fraction (by the settings' weighting) with m > 0.5.
    public var hardFreezeRatio: Float
}

/// The result: the soft mask per tensor and the hard guard (m > 0.5).
public struct LearnedMask: Sendable {
    public var names: [String]
    public var softMask: [Float]
    public var frozen: Set<String> { Set(zip(names, softMask).filter { $0.1 > 0.5 }.map(\.0)) }
    /// Tensor names from the most to the least frozen (highest soft mask first; ties keep model order).
    public var rankedNames: [String] {
        names.indices.sorted { softMask[$0] != softMask[$1] ? softMask[$0] > softMask[$1] : $0 < $1 }.map { names[$0] }
    }

    /// The learnt ranking cut at an exact ratio: the highest-mask tensors until their share of
    /// `sizes` (scalars per tensor; 1 each counts tensors) reaches `ratio`.
    ///
    /// The paper's hard rule (m > 0.5) lets many logits cross 0 together — the sparsity term moves
    /// them as one — so a short run overshoots or undershoots its ratio; cutting the ranking keeps
    /// what the mask learnt (which tensors matter most to block) at the ratio that was asked for.
    public func frozen(ratio: Double, sizes: [String: Int]) -> Set<String> {
        let total = names.reduce(0) { $0 + (sizes[$1] ?? 1) }
        var chosen = Set<String>(), covered = 0
        for name in rankedNames where Double(covered) < ratio * Double(total) {
            chosen.insert(name)
            covered += sizes[name] ?? 1
        }
        return chosen
    }
    /// The ranking cut *without passing* `ratio`: down the ranking, each tensor joins while the share
    /// stays at or below the ratio, and one that would pass it is skipped for the smaller ones after
    /// it. Why: a model whose largest tensor is a large share of it (BERT's word embeddings are half
    /// of all-MiniLM-L6-v2) would otherwise land far above the ratio asked for — 98% for 50% — as soon
    /// as the ranking reaches that tensor.
    public func frozen(atMost ratio: Double, sizes: [String: Int]) -> Set<String> {
        let total = names.reduce(0) { $0 + (sizes[$1] ?? 1) }
        var chosen = Set<String>(), covered = 0
        for name in rankedNames where Double(covered + (sizes[name] ?? 1)) <= ratio * Double(total) {
            chosen.insert(name)
            covered += sizes[name] ?? 1
        }
        return chosen
    }
    /// The learner's losses over time (restricted, permitted), one entry per publisher step: a
    /// restricted loss below the permitted one predicts a guard that will not mitigate.
    public var trace: [(restricted: Float, permitted: Float)]

    public init(names: [String], softMask: [Float], trace: [(restricted: Float, permitted: Float)]) {
        self.names = names; self.softMask = softMask; self.trace = trace
    }

    /// The last publisher step's losses, with a warning when the restricted loss is the lower one.
    public var traceSummary: String? {
        guard let last = trace.last else { return nil }
        let line = String(format: "learner trace: restricted loss %.4f, permitted loss %.4f at the last publisher step", last.restricted, last.permitted)
        guard last.restricted < last.permitted else { return line }
        return line + "\nwarning: the simulated user's restricted loss is below its permitted loss — this guard is unlikely to mitigate (see docs/PROTOCOLS.md)"
    }
}

/// FreezeAsGuard's bilevel mask learning for any `Module`.
///
/// Per trainable tensor a logit x gives a soft mask m = sigmoid(x/T); the model runs with effective
/// weights `w = w_ft + m·(w_pre − w_ft)`. User steps descend the loss on a mix of restricted and
/// permitted data and update `w_ft` (the gradient through `w` carries the factor 1 − m); every
/// `userInterval`-th step is a publisher step that moves x to raise the restricted loss and lower the
/// permitted one: `(−L_r + L_p)/2 + c·(ratio − mean(m))²`.
public final class GuardLearner {
    public let model: Module
    public let settings: GuardSettings

    public init(model: Module, settings: GuardSettings) {
        self.model = model
        self.settings = settings
    }

    /// Learns the mask. `restrictedLoss(step)` and `permittedLoss(step)` compute a loss of the model
    /// (as it is when called) on a restricted or permitted batch chosen by `step`. The model's
    /// weights are restored to the pretrained values at the end.
    public func learn(restrictedLoss: (Int) -> Tensor, permittedLoss: (Int) -> Tensor, progress: (GuardProgress) -> Void = { _ in }) -> LearnedMask {
        let entries = model.namedParameters().filter { !$0.parameter.isFrozen }
        let names = entries.map(\.name)
        let parameters = entries.map(\.parameter)
        let pretrained = parameters.map { $0.value.detached() }
        var fineTuned = pretrained
        var moments = pretrained.map { (Tensor.zeros($0.shape), Tensor.zeros($0.shape)) }
        var userSteps = 0
        let weights: [Float] = parameters.map { settings.weightByParameters ? Float($0.value.count) : 1 }
        let weightTotal = weights.reduce(0, +)
        var logits = [Float](repeating: 0, count: names.count) // m = 0.5 at start
        var logitMoments = [Float](repeating: 0, count: names.count), logitSquares = [Float](repeating: 0, count: names.count)
        var publisherSteps = 0
        var trace: [(Float, Float)] = []
        var lastRestricted: Float = .nan, lastPermitted: Float = .nan
        let t = settings.temperature
        defer { for (parameter, value) in zip(parameters, pretrained) { parameter.value = value } }

        let projecting = settings.ratioControl == .projection
        /// The offset b that puts the weighted mean of sigmoid((x + b)/T) at the ratio (projection
        /// mode; zero for the penalty).
        func offset() -> Float {
            guard projecting else { return 0 }
            let target = Double(settings.freezeRatio) * Double(weightTotal)
            func share(_ b: Double) -> Double {
                zip(logits, weights).reduce(0.0) { $0 + Double($1.1) / (1 + Foundation.exp(-(Double($1.0) + b) / Double(t))) }
            }
            var low = -60.0, high = 60.0
            for _ in 0..<80 {
                let middle = (low + high) / 2
                if share(middle) < target { low = middle } else { high = middle }
            }
            return Float((low + high) / 2)
        }
        // The offset only changes when the logits do (after a publisher step).
        var b = offset()
        for step in 0..<settings.steps {
            let mask = logits.map { 1 / (1 + Foundation.exp(-($0 + b) / t)) }
            if (step + 1) % settings.userInterval != 0 {
                // Simulated user: w = (1 − m)·w_ft + m·w_pre with w_ft trainable.
                let leaves = fineTuned.map { $0.requiringGradient() }
                for i in parameters.indices {
                    parameters[i].value = leaves[i] * (1 - mask[i]) + (pretrained[i] * mask[i]).detached()
                }
                let lr = restrictedLoss(step), lp = permittedLoss(step)
                lastRestricted = lr.scalar; lastPermitted = lp.scalar
                let loss = (lr + lp) * 0.5
                let gradients = loss.gradients(withRespectTo: leaves)
                userSteps += 1
                let b1: Float = 0.9, b2: Float = 0.999
                let c1 = 1 - Foundation.pow(b1, Float(userSteps)), c2 = (1 - Foundation.pow(b2, Float(userSteps))).squareRoot()
                for i in fineTuned.indices {
                    guard let g = gradients[i] else { continue }
                    var (m, v) = moments[i]
                    moments[i] = (Tensor.zeros([0]), Tensor.zeros([0]))
                    var w = fineTuned[i]
                    g.withUnsafeBufferPointer { gp in
                        m.withUnsafeMutableBufferPointer { mp in
                            v.withUnsafeMutableBufferPointer { vp in
                                w.withUnsafeMutableBufferPointer { wp in
                                    for k in 0..<wp.count {
                                        mp[k] = b1 * mp[k] + (1 - b1) * gp[k]
                                        vp[k] = b2 * vp[k] + (1 - b2) * gp[k] * gp[k]
                                        wp[k] -= settings.userLearningRate / c1 * mp[k] / (vp[k].squareRoot() / c2 + 1e-8)
                                    }
                                }
                            }
                        }
                    }
                    fineTuned[i] = w
                    moments[i] = (m, v)
                }
            } else {
                // Publisher: gradient to the mask logits through m.
                let x = Tensor(shape: [names.count], scalars: logits).requiringGradient()
                let m = ((x + b) * (1 / t)).sigmoid()
                let pieces = m.split(sizes: Array(repeating: 1, count: names.count))
                for i in parameters.indices {
                    let difference = (pretrained[i] - fineTuned[i]).detached()
                    parameters[i].value = fineTuned[i] + pieces[i].reshaped([]) * difference
                }
                let lr = restrictedLoss(step), lp = permittedLoss(step)
                lastRestricted = lr.scalar; lastPermitted = lp.scalar
                trace.append((lastRestricted, lastPermitted))
                let weighted = (m * Tensor(shape: [names.count], scalars: weights)).sum() * (1 / weightTotal)
                let gap = weighted - settings.freezeRatio
                let loss = projecting ? (lp - lr) * 0.5 : (lp - lr) * 0.5 + gap * gap * settings.sparsityWeight
                if let g = loss.gradients(withRespectTo: [x])[0] {
                    let grad = g.scalars
                    publisherSteps += 1
                    if projecting {
                        let rms = (grad.reduce(Float(0)) { $0 + $1 * $1 } / Float(max(grad.count, 1))).squareRoot()
                        if rms > 0, rms.isFinite { for i in logits.indices { logits[i] -= settings.maskLearningRate * grad[i] / rms } }
                    } else if settings.maskAdam {
                        let c1 = 1 - Foundation.pow(Float(0.9), Float(publisherSteps)), c2 = 1 - Foundation.pow(Float(0.999), Float(publisherSteps))
                        for i in logits.indices {
                            logitMoments[i] = 0.9 * logitMoments[i] + 0.1 * grad[i]
                            logitSquares[i] = 0.999 * logitSquares[i] + 0.001 * grad[i] * grad[i]
                            logits[i] -= settings.maskLearningRate * (logitMoments[i] / c1) / ((logitSquares[i] / c2).squareRoot() + 1e-12)
                        }
                    } else {
                        for i in logits.indices { logits[i] -= settings.maskLearningRate * grad[i] }
                    }
                    b = offset()
                }
            }
            let hard = zip(logits, weights).filter { $0.0 + b > 0 }.reduce(Float(0)) { $0 + $1.1 } / weightTotal
            progress(GuardProgress(step: step + 1, totalSteps: settings.steps, restrictedLoss: lastRestricted,
                                   permittedLoss: lastPermitted, hardFreezeRatio: hard))
        }
        let finalMask = logits.map { 1 / (1 + Foundation.exp(-($0 + b) / t)) }
        return LearnedMask(names: names, softMask: finalMask, trace: trace)
    }
}
