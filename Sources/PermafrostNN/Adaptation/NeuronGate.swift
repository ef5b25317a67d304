import PermafrostTensor

/// A ReLU whose units a learnt per-neuron threshold τ and gain γ gate (Dopamine, "Brain Modes, Not
/// Brains", arXiv 2602.11726: adaptation as a change of mode on a frozen base). With h = relu(x):
/// training uses the smooth gate y = γ·σ((h − τ)/T)·h; hardened, the gate is the step 1[h > τ], so
/// a unit either passes γ·h or is off — explicit conditional computation, and σ(·) > ½ exactly when
/// the hard gate is on. Parameters `threshold` and `gain` (`[width]`, τ = 0 and γ = 1 at the start);
/// in place of a `ReLU`, it keeps the indices of a `Sequential`'s other layers. τ starts below zero
/// (−5·T by default), so every unit is on and the gated network starts as its base.
public final class NeuronGate: Module, Layer {
    public let threshold: Parameter
    public let gain: Parameter
    /// T: the smooth gate's temperature.
    public let temperature: Float
    /// Use the step gate (inference).
    public var hardened = false

    public init(width: Int, temperature: Float = 0.1, initialThreshold: Float? = nil) {
        threshold = Parameter(Tensor(repeating: initialThreshold ?? -5 * temperature, shape: [width]))
        gain = Parameter(Tensor(repeating: 1, shape: [width]))
        self.temperature = temperature
        super.init()
        register("threshold", threshold)
        register("gain", gain)
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        let h = input.relu()
        return h * gate(h) * gain.value
    }

    /// The gate for post-ReLU activations `h`: σ((h − τ)/T), or 1[h > τ] when hardened.
    public func gate(_ h: Tensor) -> Tensor {
        if hardened {
            let width = threshold.shape[0], tau = threshold.value.scalars
            let on = h.scalars.enumerated().map { $0.element > tau[$0.offset % width] ? Float(1) : 0 }
            return Tensor(shape: h.shape, scalars: on)
        }
        return ((h - threshold.value) * (1 / temperature)).sigmoid()
    }
}
