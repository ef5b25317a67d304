import Foundation
import PermafrostNN
import PermafrostTensor

/// DP-SGD (Abadi et al., arXiv 1607.00133): every example's gradient clipped to L2 norm `clipNorm`
/// over all trainable tensors, the clipped gradients summed, Gaussian noise of standard deviation
/// `noiseMultiplier · clipNorm` added to each coordinate, divided by the batch size.
public struct DPSGDSettings: Sendable, Equatable, Codable {
    public var clipNorm: Float
    public var noiseMultiplier: Float

    public init(clipNorm: Float = 1, noiseMultiplier: Float) {
        self.clipNorm = clipNorm
        self.noiseMultiplier = noiseMultiplier
    }

    /// The privatised mean gradient of a batch: `exampleLoss(i)` is example i's loss.
    public func gradients(_ model: Module, examples: Int, generator: inout PhiloxGenerator,
                          exampleLoss: (Int) throws -> Tensor) rethrows -> [String: Tensor] {
        var sums: [String: [Float]] = [:]
        for i in 0..<examples {
            let (_, gradients) = try model.valueAndGradient { try exampleLoss(i) }
            let norm = gradients.values.reduce(Float(0)) { $0 + $1.scalars.reduce(0) { $0 + $1 * $1 } }.squareRoot()
            let factor = min(1, clipNorm / max(norm, 1e-12))
            for (name, gradient) in gradients {
                let scaled = gradient.scalars.map { $0 * factor }
                sums[name] = sums[name].map { zip($0, scaled).map { $0 + $1 } } ?? scaled
            }
        }
        let shapes = Dictionary(model.trainableParameters().map { ($0.name, $0.parameter.shape) }, uniquingKeysWith: { a, _ in a })
        let deviation = noiseMultiplier * clipNorm
        return Dictionary(uniqueKeysWithValues: sums.map { name, sum in
            let noisy = sum.map { ($0 + deviation * generator.nextNormal()) / Float(examples) }
            return (name, Tensor(shape: shapes[name]!, scalars: noisy))
        })
    }
}

/// The privacy a DP-SGD run spent: Rényi DP of the subsampled Gaussian mechanism (Mironov, Talwar and
/// Zhang, arXiv 1908.10530, integer orders) composed over the steps, converted to (ε, δ) with
/// ε = min over α of RDP(α) + log(1/δ)/(α − 1). Batches drawn by shuffling are accounted as Poisson
/// sampling at the same rate, the usual approximation.
public enum PrivacyAccountant {
    public static let orders = Array(2...64) + [80, 96, 128, 160, 192, 256]

    /// RDP of one step at order α (integer ≥ 2), sampling rate q, noise multiplier σ.
    public static func renyiDivergence(samplingRate q: Double, noiseMultiplier sigma: Double, order alpha: Int) -> Double {
        guard q > 0 else { return 0 }
        guard q < 1 else { return Double(alpha) / (2 * sigma * sigma) }
        var terms: [Double] = []
        var logBinomial = 0.0
        for k in 0...alpha {
            if k > 0 { logBinomial += log(Double(alpha - k + 1)) - log(Double(k)) }
            terms.append(logBinomial + Double(alpha - k) * log(1 - q) + Double(k) * log(q) + Double(k * k - k) / (2 * sigma * sigma))
        }
        let top = terms.max()!
        return (top + log(terms.reduce(0) { $0 + exp($1 - top) })) / Double(alpha - 1)
    }

    /// ε at `delta` after `steps` steps.
    public static func epsilon(samplingRate q: Double, noiseMultiplier sigma: Double, steps: Int, delta: Double = 1e-5) -> Double {
        guard sigma > 0 else { return .infinity }
        return orders.map { Double(steps) * renyiDivergence(samplingRate: q, noiseMultiplier: sigma, order: $0) + log(1 / delta) / Double($0 - 1) }.min()!
    }
}
