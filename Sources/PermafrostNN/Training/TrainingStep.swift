import PermafrostTensor

/// Bytes a training step held, by kind. Frozen tensors contribute parameters only: no gradient, no
/// optimizer state, and no activations where nothing upstream trains.
public struct MemoryReport: Sendable, Codable, Equatable, CustomStringConvertible {
    /// All parameters, trainable and frozen.
    public var parameterBytes: Int
    /// Gradients of the trainable parameters.
    public var gradientBytes: Int
    /// Optimizer state (moments, momentum buffers) after the step.
    public var optimizerStateBytes: Int
    /// Tensor memory the forward pass kept alive for backward (the autodiff graph's saved tensors).
    public var activationBytes: Int
    /// Most tensor bytes held at once during the step.
    public var peakBytes: Int

    enum CodingKeys: String, CodingKey {
        case parameterBytes = "parameter_bytes", gradientBytes = "gradient_bytes", optimizerStateBytes = "optimizer_state_bytes"
        case activationBytes = "activation_bytes", peakBytes = "peak_bytes"
    }

    public var description: String {
        func mib(_ bytes: Int) -> String {
            let hundredths = (Double(bytes) / 1_048_576 * 100).rounded()
            return "\(Int(hundredths) / 100).\(String(format: "%02d", Int(hundredths) % 100)) MiB"
        }
        return "parameters \(mib(parameterBytes)), gradients \(mib(gradientBytes)), optimizer state \(mib(optimizerStateBytes)), activations \(mib(activationBytes)), peak \(mib(peakBytes))"
    }
}

/// Why a training step failed. A failed step leaves every parameter unchanged.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
    case nonFiniteLoss(Float)
    case optimizer(OptimizerError)

    public var description: String {
        switch self {
        case let .nonFiniteLoss(value): return "the loss is \(value); the step was skipped and no parameter changed (lower the learning rate or check the data)"
        case let .optimizer(error): return error.description
        }
    }
}

/// What one training step did.
public struct TrainingStepResult: Sendable {
    public var loss: Float
    /// Global gradient norm before clipping (computed only when clipping).
    public var gradientNorm: Float?
    public var memory: MemoryReport
}

extension Module {
    /// One step: forward and loss (`body`), backward for the trainable tensors only, optional
    /// clipping, and the optimizer update. Reports the memory the step used.
    public func trainingStep(
        optimizer: Optimizer, clipGradientNorm maxNorm: Float? = nil, _ body: () throws -> Tensor
    ) throws -> TrainingStepResult {
        MemoryStatistics.resetPeak()
        let before = MemoryStatistics.liveBytes
        var activationBytes = 0
        var (loss, gradients) = try valueAndGradient {
            let loss = try body()
            activationBytes = Swift.max(0, MemoryStatistics.liveBytes - before - loss.count * 4)
            return loss
        }
        guard loss.scalar.isFinite else { throw TrainingError.nonFiniteLoss(loss.scalar) }
        let norm = maxNorm.map { PermafrostNN.clipGradientNorm(&gradients, maxNorm: $0) }
        do { try optimizer.step(self, gradients: gradients) } catch { throw TrainingError.optimizer(error) }
        let memory = MemoryReport(
            parameterBytes: parameterCount * 4,
            gradientBytes: gradients.values.reduce(0) { $0 + $1.count * 4 },
            optimizerStateBytes: optimizer.stateBytes,
            activationBytes: activationBytes,
            peakBytes: MemoryStatistics.peakBytes)
        return TrainingStepResult(loss: loss.scalar, gradientNorm: norm, memory: memory)
    }
}
