import Foundation
import PermafrostTensor

/// diffusers' beta schedules.
public enum BetaSchedule: String, Sendable, Codable, CaseIterable {
    case linear
    case scaledLinear = "scaled_linear"
    case squaredCosine = "squaredcos_cap_v2"
}

/// βₜ and ᾱₜ = ∏(1 − βₛ) for a number of training timesteps, computed as diffusers does
/// (Float32 betas and a Float32 running product).
public struct NoiseSchedule: Sendable, Equatable {
    public let betas: [Float]
    public let alphasCumulativeProduct: [Float]
    public var trainTimesteps: Int { betas.count }

    public init(_ schedule: BetaSchedule = .linear, trainTimesteps: Int = 1000, betaStart: Double = 0.0001, betaEnd: Double = 0.02) {
        precondition(trainTimesteps > 1, "a noise schedule needs at least 2 timesteps")
        let n = trainTimesteps
        switch schedule {
        case .linear:
            betas = Self.linspace(betaStart, betaEnd, n).map { Float($0) }
        case .scaledLinear:
            betas = Self.linspace(betaStart.squareRoot(), betaEnd.squareRoot(), n).map { Float($0) }.map { $0 * $0 }
        case .squaredCosine:
            func alphaBar(_ t: Double) -> Double { let c = Foundation.cos((t + 0.008) / 1.008 * Double.pi / 2); return c * c }
            betas = (0..<n).map { i in Float(Swift.min(1 - alphaBar(Double(i + 1) / Double(n)) / alphaBar(Double(i) / Double(n)), 0.999)) }
        }
        var product: Float = 1
        alphasCumulativeProduct = betas.map { beta in
            product *= (1 - beta)
            return product
        }
    }

    /// `torch.linspace` in Float32: the first half counts up from `start`, the second half down from `end`.
    static func linspace(_ start: Double, _ end: Double, _ count: Int) -> [Float] {
        let a = Float(start), b = Float(end)
        let step = (b - a) / Float(count - 1)
        let half = count / 2
        return (0..<count).map { i in i < half ? a + step * Float(i) : b - step * Float(count - i - 1) }
    }

    /// `sqrt(ᾱₜ)·x₀ + sqrt(1 − ᾱₜ)·noise`, one timestep per sample (axis 0).
    public func addNoise(_ original: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        precondition(original.shape == noise.shape, "addNoise: sample \(original.shape) and noise \(noise.shape) differ")
        precondition(timesteps.count == original.shape[0], "addNoise: \(timesteps.count) timesteps for a batch of \(original.shape[0])")
        let perSample = original.count / Swift.max(original.shape[0], 1)
        return Tensor(shape: original.shape) { out in
            original.withUnsafeBufferPointer { x in
                noise.withUnsafeBufferPointer { e in
                    for (b, t) in timesteps.enumerated() {
                        precondition(t >= 0 && t < trainTimesteps, "timestep \(t) outside 0..<\(trainTimesteps)")
                        let a = alphasCumulativeProduct[t].squareRoot(), s = (1 - alphasCumulativeProduct[t]).squareRoot()
                        for i in (b * perSample)..<((b + 1) * perSample) { out[i] = a * x[i] + s * e[i] }
                    }
                }
            }
        }
    }

    /// diffusers' "leading" spacing: `(0..<n)·(T / n)`, descending.
    func leadingTimesteps(_ inferenceSteps: Int) -> [Int] {
        precondition(inferenceSteps > 0 && inferenceSteps <= trainTimesteps, "inference steps must be in 1...\(trainTimesteps), got \(inferenceSteps)")
        let ratio = trainTimesteps / inferenceSteps
        return (0..<inferenceSteps).map { $0 * ratio }.reversed()
    }
}

/// ᾱ at `t` and at the previous inference timestep (1 before the first), for `inferenceSteps` steps.
private func alphaProducts(_ schedule: NoiseSchedule, t: Int, inferenceSteps: Int) -> (current: Float, previous: Float) {
    precondition(t >= 0 && t < schedule.trainTimesteps, "timestep \(t) outside 0..<\(schedule.trainTimesteps)")
    let previous = t - schedule.trainTimesteps / inferenceSteps
    return (schedule.alphasCumulativeProduct[t], previous >= 0 ? schedule.alphasCumulativeProduct[previous] : 1)
}

/// Element-wise `a·x + b·y (+ c·z)` without autodiff.
private func combine(_ a: Float, _ x: Tensor, _ b: Float, _ y: Tensor, _ c: Float = 0, _ z: Tensor? = nil) -> Tensor {
    Tensor(shape: x.shape) { out in
        x.withUnsafeBufferPointer { xs in
            y.withUnsafeBufferPointer { ys in
                if let z {
                    z.withUnsafeBufferPointer { zs in for i in 0..<out.count { out[i] = a * xs[i] + b * ys[i] + c * zs[i] } }
                } else {
                    for i in 0..<out.count { out[i] = a * xs[i] + b * ys[i] }
                }
            }
        }
    }
}

/// x̂₀ from an epsilon prediction, clipped to ±`range` as diffusers does by default.
private func predictedOriginal(sample: Tensor, epsilon: Tensor, alphaProduct: Float, clipRange: Float?) -> Tensor {
    let betaProduct = 1 - alphaProduct
    let root = alphaProduct.squareRoot(), betaRoot = betaProduct.squareRoot()
    return Tensor(shape: sample.shape) { out in
        sample.withUnsafeBufferPointer { x in
            epsilon.withUnsafeBufferPointer { e in
                for i in 0..<out.count {
                    let v = (x[i] - betaRoot * e[i]) / root
                    out[i] = clipRange.map { Swift.min(Swift.max(v, -$0), $0) } ?? v
                }
            }
        }
    }
}

/// diffusers' `DDPMScheduler` for epsilon prediction with `variance_type="fixed_small"`.
public struct DDPMScheduler: Sendable {
    public let schedule: NoiseSchedule
    public var clipSampleRange: Float? = 1
    public private(set) var timesteps: [Int] = []
    private var inferenceSteps = 0

    public init(schedule: NoiseSchedule = NoiseSchedule()) {
        self.schedule = schedule
        timesteps = Array((0..<schedule.trainTimesteps).reversed())
        inferenceSteps = schedule.trainTimesteps
    }

    public mutating func setTimesteps(_ count: Int) {
        timesteps = schedule.leadingTimesteps(count)
        inferenceSteps = count
    }

    /// x_{t−1} from x_t and the predicted noise; `noise` is the variance noise (drawn from
    /// `generator` when nil; unused at t = 0).
    public func step(epsilon: Tensor, timestep t: Int, sample: Tensor, noise: Tensor? = nil, generator: inout PhiloxGenerator) -> Tensor {
        let (alphaProduct, alphaProductPrevious) = alphaProducts(schedule, t: t, inferenceSteps: inferenceSteps)
        let betaProduct = 1 - alphaProduct, betaProductPrevious = 1 - alphaProductPrevious
        let currentAlpha = alphaProduct / alphaProductPrevious, currentBeta = 1 - currentAlpha
        let original = predictedOriginal(sample: sample, epsilon: epsilon, alphaProduct: alphaProduct, clipRange: clipSampleRange)
        let originalCoefficient = alphaProductPrevious.squareRoot() * currentBeta / betaProduct
        let sampleCoefficient = currentAlpha.squareRoot() * betaProductPrevious / betaProduct
        guard t > 0 else { return combine(originalCoefficient, original, sampleCoefficient, sample) }
        let variance = Swift.max((1 - alphaProductPrevious) / (1 - alphaProduct) * currentBeta, 1e-20)
        let z = noise ?? Tensor(randomNormal: sample.shape, generator: &generator)
        return combine(originalCoefficient, original, sampleCoefficient, sample, variance.squareRoot(), z)
    }
}

/// diffusers' `DDIMScheduler` (epsilon prediction, `set_alpha_to_one`, clipped x̂₀, `eta` noise).
public struct DDIMScheduler: Sendable {
    public let schedule: NoiseSchedule
    public var clipSampleRange: Float? = 1
    public private(set) var timesteps: [Int] = []
    private var inferenceSteps = 0

    public init(schedule: NoiseSchedule = NoiseSchedule()) {
        self.schedule = schedule
    }

    public mutating func setTimesteps(_ count: Int) {
        timesteps = schedule.leadingTimesteps(count)
        inferenceSteps = count
    }

    /// x_{t_prev} from x_t. With `eta` > 0 adds `eta·σₜ·noise` (noise drawn from `generator` when nil).
    public func step(epsilon: Tensor, timestep t: Int, sample: Tensor, eta: Float = 0, noise: Tensor? = nil,
                     generator: inout PhiloxGenerator) -> Tensor {
        precondition(inferenceSteps > 0, "call setTimesteps before step")
        let (alphaProduct, alphaProductPrevious) = alphaProducts(schedule, t: t, inferenceSteps: inferenceSteps)
        let betaProduct = 1 - alphaProduct, betaProductPrevious = 1 - alphaProductPrevious
        let original = predictedOriginal(sample: sample, epsilon: epsilon, alphaProduct: alphaProduct, clipRange: clipSampleRange)
        let variance = (betaProductPrevious / betaProduct) * (1 - alphaProduct / alphaProductPrevious)
        let deviation = eta * variance.squareRoot()
        let direction = (1 - alphaProductPrevious - deviation * deviation).squareRoot()
        if eta > 0 {
            let z = noise ?? Tensor(randomNormal: sample.shape, generator: &generator)
            return combine(alphaProductPrevious.squareRoot(), original, direction, epsilon, deviation, z)
        }
        return combine(alphaProductPrevious.squareRoot(), original, direction, epsilon)
    }
}
