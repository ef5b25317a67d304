import PermafrostTensor

/// Stochastic gradient descent with optional momentum (heavy-ball or Nesterov) and L2 weight decay,
/// exactly as `torch.optim.SGD`.
public final class SGD: Optimizer {
    public var learningRate: Float
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    private var momentumBuffers: [String: Tensor] = [:]

    public init(learningRate: Float, momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        precondition(!nesterov || (momentum > 0 && dampening == 0), "Nesterov momentum needs momentum > 0 and no dampening")
        self.learningRate = learningRate
        self.momentum = momentum; self.dampening = dampening; self.weightDecay = weightDecay; self.nesterov = nesterov
    }

    public func step(_ model: Module, gradients: [String: Tensor]) throws(OptimizerError) {
        for (name, parameter, gradient) in try updatable(model, gradients) {
            let hasBuffer = momentumBuffers[name] != nil
            var buffer = momentumBuffers[name] ?? (momentum != 0 ? Tensor.zeros(parameter.shape) : Tensor.zeros([0]))
            let (lr, mu, damp, wd, nesterov) = (learningRate, momentum, dampening, weightDecay, self.nesterov)
            let ranges = writableRanges(parameter)
            gradient.withUnsafeBufferPointer { g in
                buffer.withUnsafeMutableBufferPointer { b in
                    parameter.value.withUnsafeMutableBufferPointer { p in
                        for range in ranges {
                            for i in range {
                                var d = g[i]
                                if wd != 0 { d += wd * p[i] }
                                if mu != 0 {
                                    b[i] = hasBuffer ? mu * b[i] + (1 - damp) * d : d
                                    d = nesterov ? d + mu * b[i] : b[i]
                                }
                                p[i] -= lr * d
                            }
                        }
                    }
                }
            }
            if momentum != 0 { momentumBuffers[name] = buffer }
        }
    }

    public var stateBytes: Int { momentumBuffers.values.reduce(0) { $0 + $1.count * 4 } }
    public func releaseState(for names: Set<String>) { for name in names { momentumBuffers[name] = nil } }
    public var tensorsWithState: Set<String> { Set(momentumBuffers.keys) }

    /// The momentum buffers, for checkpoints: tensors `b.<name>`.
    public func exportState() -> [(name: String, tensor: Tensor)] {
        momentumBuffers.keys.sorted().map { ("b." + $0, momentumBuffers[$0]!) }
    }

    /// Restores what ``exportState()`` produced (replacing any current state).
    public func importState(tensors: [String: Tensor]) {
        momentumBuffers = [:]
        for (name, tensor) in tensors where name.hasPrefix("b.") { momentumBuffers[String(name.dropFirst(2))] = tensor }
    }
}
