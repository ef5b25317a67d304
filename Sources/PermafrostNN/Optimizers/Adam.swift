import Foundation
import PermafrostTensor

/// Adam and AdamW, following `torch.optim.Adam`/`AdamW`'s single-tensor update step for step.
///
/// AdamW decays weights decoupled (`p ← p·(1 − lr·λ)`); Adam adds `λ·p` to the gradient. In both,
/// a frozen tensor gets no moments and no decay.
public final class Adam: Optimizer {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    /// Decoupled weight decay (AdamW) instead of L2 on the gradient (Adam).
    public let decoupledWeightDecay: Bool

    struct State {
        var firstMoment: Tensor
        var secondMoment: Tensor
        var step: Int
    }
    private var states: [String: State] = [:]

    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decoupledWeightDecay: Bool = false) {
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        self.weightDecay = weightDecay; self.decoupledWeightDecay = decoupledWeightDecay
    }

    /// `torch.optim.AdamW` (default weight decay 0.01).
    public static func adamW(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                             epsilon: Float = 1e-8, weightDecay: Float = 0.01) -> Adam {
        Adam(learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay, decoupledWeightDecay: true)
    }

    public func step(_ model: Module, gradients: [String: Tensor]) throws(OptimizerError) {
        for (name, parameter, gradient) in try updatable(model, gradients) {
            var state = states[name] ?? State(firstMoment: Tensor.zeros(parameter.shape), secondMoment: Tensor.zeros(parameter.shape), step: 0)
            states[name] = nil // keep the moments uniquely referenced so they update in place
            state.step += 1
            let lr = learningRate, b1 = beta1, b2 = beta2, eps = epsilon, wd = weightDecay, decoupled = decoupledWeightDecay
            let correction1 = 1 - Foundation.pow(b1, Float(state.step))
            let correction2Root = (1 - Foundation.pow(b2, Float(state.step))).squareRoot()
            let stepSize = lr / correction1
            let decay = 1 - lr * wd
            let ranges = writableRanges(parameter)
            gradient.withUnsafeBufferPointer { gBuffer in
                state.firstMoment.withUnsafeMutableBufferPointer { mBuffer in
                    state.secondMoment.withUnsafeMutableBufferPointer { vBuffer in
                        parameter.value.withUnsafeMutableBufferPointer { pBuffer in
                            let g = SharedBuffer(gBuffer.baseAddress!), m = SharedBuffer(mBuffer.baseAddress!)
                            let v = SharedBuffer(vBuffer.baseAddress!), p = SharedBuffer(pBuffer.baseAddress!)
                            let update = AdamUpdate(stepSize: stepSize, beta1: b1, beta2: b2, epsilon: eps, correction2Root: correction2Root,
                                                    weightDecay: wd, decay: decay, decoupled: decoupled)
                            for range in ranges {
                                Parallel.forEachChunk(count: range.count, minimumChunk: 65_536) { chunk in
                                    update.apply((range.lowerBound + chunk.lowerBound)..<(range.lowerBound + chunk.upperBound), g: g, m: m, v: v, p: p)
                                }
                            }
                        }
                    }
                }
            }
            states[name] = state
        }
    }

    public var stateBytes: Int { states.values.reduce(0) { $0 + ($1.firstMoment.count + $1.secondMoment.count) * 4 } }
    public func releaseState(for names: Set<String>) { for name in names { states[name] = nil } }
    public var tensorsWithState: Set<String> { Set(states.keys) }

    /// The moments and step counts, for checkpoints: tensors `m.<name>` and `v.<name>`.
    public func exportState() -> (tensors: [(name: String, tensor: Tensor)], steps: [String: Int]) {
        var tensors: [(String, Tensor)] = []
        var steps: [String: Int] = [:]
        for name in states.keys.sorted() {
            let state = states[name]!
            tensors.append(("m." + name, state.firstMoment))
            tensors.append(("v." + name, state.secondMoment))
            steps[name] = state.step
        }
        return (tensors, steps)
    }

    /// Restores what ``exportState()`` produced (replacing any current state).
    public func importState(tensors: [String: Tensor], steps: [String: Int]) {
        states = [:]
        for (name, step) in steps {
            guard let m = tensors["m." + name], let v = tensors["v." + name], m.shape == v.shape else { continue }
            states[name] = State(firstMoment: m, secondMoment: v, step: step)
        }
    }
}

/// A raw element pointer shared with the fork-join chunks; each chunk writes a disjoint range.
struct SharedBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    init(_ base: UnsafeMutablePointer<Float>) { self.base = base }
    init(_ base: UnsafePointer<Float>) { self.base = UnsafeMutablePointer(mutating: base) }
    subscript(i: Int) -> Float {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }
}

/// One Adam(W) update with its step's coefficients, over a range of the flat buffers.
///
/// Sixteen lanes at a time, then a scalar tail: the plain loop stayed scalar (the compiler cannot
/// rule out that the four buffers overlap, and `sqrt` kept a libm call for its NaN path), which
/// made the optimizer a visible share of frozen steps, where the arithmetic per step is small.
/// Each lane does exactly the scalar operations, so the results are identical.
struct AdamUpdate {
    let stepSize: Float, beta1: Float, beta2: Float, epsilon: Float, correction2Root: Float
    let weightDecay: Float, decay: Float, decoupled: Bool

    @inline(__always)
    func apply(_ range: Range<Int>, g: SharedBuffer, m: SharedBuffer, v: SharedBuffer, p: SharedBuffer) {
        typealias Lanes = SIMD16<Float>
        var i = range.lowerBound
        let end = range.upperBound
        while i + Lanes.scalarCount <= end {
            var d = UnsafeRawPointer(g.base + i).loadUnaligned(as: Lanes.self)
            var pi = UnsafeRawPointer(p.base + i).loadUnaligned(as: Lanes.self)
            var mi = UnsafeRawPointer(m.base + i).loadUnaligned(as: Lanes.self)
            var vi = UnsafeRawPointer(v.base + i).loadUnaligned(as: Lanes.self)
            if decoupled { pi *= decay } else if weightDecay != 0 { d += weightDecay * pi }
            mi += (1 - beta1) * (d - mi) // torch's lerp for weight < 0.5
            vi = vi * beta2 + (1 - beta2) * d * d
            let denominator = vi.squareRoot() / correction2Root + epsilon
            pi -= stepSize * mi / denominator
            UnsafeMutableRawPointer(p.base + i).storeBytes(of: pi, as: Lanes.self)
            UnsafeMutableRawPointer(m.base + i).storeBytes(of: mi, as: Lanes.self)
            UnsafeMutableRawPointer(v.base + i).storeBytes(of: vi, as: Lanes.self)
            i += Lanes.scalarCount
        }
        while i < end {
            var d = g[i]
            if decoupled { p[i] *= decay } else if weightDecay != 0 { d += weightDecay * p[i] }
            m[i] += (1 - beta1) * (d - m[i])
            v[i] = v[i] * beta2 + (1 - beta2) * d * d
            let denominator = v[i].squareRoot() / correction2Root + epsilon
            p[i] -= stepSize * m[i] / denominator
            i += 1
        }
    }
}
