import Foundation

/// Learning rate as a function of the step (0-based).
public enum LearningRateSchedule: Sendable, Codable, Equatable {
    /// The same rate every step.
    case constant(Float)
    /// Linear ramp from 0 to `peak` over `warmupSteps`, then constant.
    case linearWarmup(peak: Float, warmupSteps: Int)
    /// Linear warm-up to `peak`, then cosine decay to `minimum` at `totalSteps`.
    case cosine(peak: Float, minimum: Float, warmupSteps: Int, totalSteps: Int)

    public func rate(atStep step: Int) -> Float {
        switch self {
        case let .constant(rate):
            return rate
        case let .linearWarmup(peak, warmup):
            return warmup > 0 && step < warmup ? peak * Float(step + 1) / Float(warmup) : peak
        case let .cosine(peak, minimum, warmup, total):
            if warmup > 0 && step < warmup { return peak * Float(step + 1) / Float(warmup) }
            let span = Swift.max(1, total - warmup)
            let progress = Swift.min(1, Float(step - warmup) / Float(span))
            return minimum + (peak - minimum) * 0.5 * (1 + Foundation.cos(Float.pi * progress))
        }
    }
}
