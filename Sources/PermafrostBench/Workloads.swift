import Foundation
import PermafrostDiffusion
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Freezes the first round(fraction·N) tensors in state_dict order; `nil` freezes all but the last two
/// (a linear probe). The PyTorch peers' `timed_steps` (Scripts/bench/torch_workloads.py) does the same.
public func freezeLeading(_ module: Module, fraction: Double?) throws {
    let names = module.namedParameters().map(\.name)
    let count = fraction.map { Int(($0 * Double(names.count)).rounded()) } ?? names.count - 2
    try module.freeze(names: Array(names.prefix(count)))
}

/// Seconds of each of `steps` AdamW training steps after two warm-up steps, and the engine's peak bytes.
public func timedSteps(_ module: Module, steps: Int, learningRate: Float, _ loss: () throws -> Tensor) throws -> ([Double], Int) {
    let optimizer = Adam.adamW(learningRate: learningRate)
    var times: [Double] = [], peak = 0
    for step in 0..<(steps + 2) {
        let start = monotonicSeconds()
        let result = try module.trainingStep(optimizer: optimizer, loss)
        if step >= 2 { times.append(monotonicSeconds() - start) }
        peak = max(peak, result.memory.peakBytes)
    }
    return (times, peak)
}

/// The benchmarked models with their loss on fixed random data, each the twin of a PyTorch peer's.
public enum BenchWorkload: String, CaseIterable, Sendable {
    /// MLP 784-1024-1024-10, cross-entropy.
    case mlp
    /// The evaluation CNN (`ImageClassifier`), batch 64.
    case cnn
    /// The reference MNIST `UNet2DModel`, epsilon-prediction MSE.
    case unet
    /// A BERT-sized encoder (MiniLM's shape), sequence 128, batch 8.
    case bert

    /// The model and a loss closure over `batch` fixed inputs (`batch` applies to the MLP and UNet).
    public func make(batch: Int) throws -> (Module, () -> Tensor) {
        var g = PhiloxGenerator(seed: 1)
        switch self {
        case .mlp:
            let mlp = Sequential([Linear(784, 1024, generator: &g), ReLU(), Linear(1024, 1024, generator: &g), ReLU(), Linear(1024, 10, generator: &g)])
            let x = Tensor(randomNormal: [batch, 784], generator: &g)
            let labels = (0..<batch).map { $0 % 10 }
            return (mlp, { crossEntropy(logits: mlp(x), labels: labels) })
        case .cnn:
            let cnn = ImageClassifier(classes: 10, seed: 1)
            let x = Tensor(randomUniform: [64, 1, 28, 28], lower: -1, upper: 1, generator: &g)
            return (cnn, { crossEntropy(logits: cnn.logits(x), labels: (0..<64).map { $0 % 10 }) })
        case .unet:
            let unet = try UNet2DModel(config: .mnistReference, seed: 1)
            let images = Tensor(randomUniform: [batch, 1, 28, 28], lower: -1, upper: 1, generator: &g)
            let labels = (0..<batch).map { $0 % 10 }
            let schedule = NoiseSchedule()
            var stream: UInt64 = 0
            return (unet, {
                stream += 1
                var r = PhiloxGenerator(seed: 2, stream: stream)
                return epsilonPredictionLoss(unet, on: schedule.noised(images, labels: labels, generator: &r))
            })
        case .bert:
            let bert = EncoderClassifier(seed: 1)
            let tokens = (0..<(8 * 128)).map { _ in Int(g.nextUInt32() % 30522) }
            return (bert, { crossEntropy(logits: bert(tokens: tokens, batch: 8, length: 128), labels: (0..<8).map { $0 % 2 }) })
        }
    }
}

/// Per-call seconds of `reps` n×n SGEMMs through the engine after one warm-up call.
public func timedMatrixProducts(n: Int, reps: Int) -> [Double] {
    var generator = PhiloxGenerator(seed: 1)
    let a = Tensor(randomNormal: [n, n], generator: &generator)
    let b = Tensor(randomNormal: [n, n], generator: &generator)
    _ = a.matmul(b)
    var times: [Double] = []
    var c = Tensor.zeros([n, n])
    for _ in 0..<reps {
        let start = monotonicSeconds()
        Tensor.matmul(a, b, into: &c)
        times.append(monotonicSeconds() - start)
    }
    return times
}
