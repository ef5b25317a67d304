import Foundation

/// Element-wise functions and activations with their gradients.
extension Tensor {
    /// What a unary derivative reads besides the incoming gradient; only that is kept for backward
    /// (keeping both input and output would double the activation memory of every activation).
    private enum Keeps { case input, output }

    /// Records a unary operation `f` whose input gradient is `derivative(g, x, y)` with `y = f(x)`;
    /// the argument not kept is passed the gradient instead and must be ignored by `derivative`.
    @inline(__always)
    private func unary<F: UnaryElementFunction, D: TernaryElementFunction>(_ name: String, _ f: F, _ derivative: D, keeps: Keeps,
                                                                            compressible: Bool = false) -> Tensor {
        var result = mapElements(f)
        let kept = keeps == .input ? detached() : result.detached()
        if compressible, ActivationCompression.current.compressesStaticActivations, node != nil, GradientRecording.isRecording {
            result.recordCompressed(name, input: self, copy: Int8Copy(kept), derivative, savedIsInput: keeps == .input)
            return result
        }
        let saved = kept
        result.recordOperation(name, inputs: [self]) { g, _ in
            [keeps == .input ? Tensor.zipElements(g, saved, g, derivative) : Tensor.zipElements(g, g, saved, derivative)]
        }
        return result
    }

    public func exp() -> Tensor { unary("exp", Element.Exp(), Element.ExpGradient(), keeps: .output) }
    public func log() -> Tensor { unary("log", Element.Log(), Element.LogGradient(), keeps: .input) }
    public func sqrt() -> Tensor { unary("sqrt", Element.Sqrt(), Element.SqrtGradient(), keeps: .output) }
    public func rsqrt() -> Tensor { unary("rsqrt", Element.Rsqrt(), Element.RsqrtGradient(), keeps: .output) }
    public func abs() -> Tensor { unary("abs", Element.Abs(), Element.AbsGradient(), keeps: .input) }
    public func squared() -> Tensor { unary("square", Element.Square(), Element.SquareGradient(), keeps: .input) }

    /// `self` raised to a constant power.
    public func pow(_ exponent: Float) -> Tensor {
        if exponent == 2 { return squared() }
        return unary("pow", Element.PowerOf(exponent: exponent), Element.PowerOfGradient(exponent: exponent), keeps: .input)
    }

    /// `self` raised element-wise to `exponent`, with broadcasting. Gradients need `self > 0` where
    /// the exponent requires one.
    public func pow(_ exponent: Tensor) -> Tensor {
        var result = Tensor.broadcastElements(self, exponent, Element.Power())
        let base = detached(), power = exponent.detached(), output = result.detached()
        result.recordOperation("pow", inputs: [self, exponent]) { g, needs in
            let shape = g.shape
            let b = base.broadcast(to: shape), p = power.broadcast(to: shape)
            return [
                needs[0] ? Tensor.zipElements(g, b, p, Element.PowerBaseGradient()).summed(toShape: base.shape) : nil,
                needs[1] ? Tensor.zipElements(g, b, output, Element.PowerExponentGradient()).summed(toShape: power.shape) : nil,
            ]
        }
        return result
    }

    /// Limits every element to `[minimum, maximum]`; the gradient is passed where the input lies inside.
    public func clamped(min minimum: Float = -.infinity, max maximum: Float = .infinity) -> Tensor {
        precondition(minimum <= maximum, "clamp range [\(minimum), \(maximum)] is empty")
        return unary("clamp", Element.Clamp(lower: minimum, upper: maximum), Element.ClampGradient(lower: minimum, upper: maximum), keeps: .input)
    }

    public func tanh() -> Tensor { unary("tanh", Element.Tanh(), Element.TanhGradient(), keeps: .output, compressible: true) }
    public func sigmoid() -> Tensor { unary("sigmoid", Element.Sigmoid(), Element.SigmoidGradient(), keeps: .output, compressible: true) }
    /// max(x, 0). Backward keeps one bit per element (where x > 0), not the Float32 input.
    public func relu() -> Tensor {
        var result = mapElements(Element.ReLU())
        result.recordReLU(of: self)
        return result
    }

    /// Replaces `self` with `relu(self)`, overwriting its buffer when nothing else holds it (a
    /// convolution's or linear layer's fresh output, typically): ReLU's backward reads only the sign
    /// mask of its output, so the in-place form is exact whether or not a gradient flows, and the
    /// forward pass keeps one activation less alive. Otherwise the same as `self = relu()`.
    public mutating func formReLU() {
        guard isKnownUniquelyReferenced(&storage) else {
            self = relu()
            return
        }
        updateElements(Element.ReLU())
        // The node records only the input's autodiff node, never its (now overwritten) values.
        let input = self
        node = nil
        recordReLU(of: input)
    }

    /// Records `self` (already `relu(input)`) as ReLU of `input`: backward keeps the output's sign
    /// mask and applies it in the incoming gradient's own buffer when that buffer is unshared.
    private mutating func recordReLU(of input: Tensor) {
        guard input.node != nil, GradientRecording.isRecording else { return }
        let mask = SignMask(positiveIn: self)
        // Streamed, the mask is applied to each chunk and the chunk passed on (StreamedGradient.swift).
        let streaming: StreamingConsumer = { needs, sinks in
            guard needs[0], let next = sinks[0] else { return nil }
            return GradientSink(consume: { images, chunk in
                mask.mask(images: images, of: chunk)
                next.consume(images, chunk)
            }, finish: { [nil] })
        }
        recordConsumingOperation("relu", inputs: [input], streamingConsumer: streaming) { g, _ in [mask.masking(consuming: &g)] }
    }

    /// x · sigmoid(x) (also called swish).
    public func silu() -> Tensor { unary("silu", Element.SiLU(), Element.SiLUGradient(), keeps: .input, compressible: true) }

    /// Replaces `self` with `silu(self)`, reusing its buffer when nothing else holds it and either
    /// no gradient flows through it (a frozen prefix of the network, or inference) or activation
    /// compression is on (the backward pass then reads the 8-bit copy, never the Float32 input):
    /// one activation less in the forward pass's working set — a norm's fresh output, typically.
    /// Otherwise the same as `self = silu()`. Values and gradients are identical either way.
    public mutating func formSiLU() {
        if node == nil || !GradientRecording.isRecording, isKnownUniquelyReferenced(&storage) {
            updateElements(Element.SiLU())
            node = nil
            return
        }
        guard ActivationCompression.current.compressesStaticActivations, node != nil, GradientRecording.isRecording,
              isKnownUniquelyReferenced(&storage) else {
            self = silu()
            return
        }
        let copy = Int8Copy(self)
        updateElements(Element.SiLU())
        var result = self
        result.recordCompressed("silu", input: self, copy: copy, Element.SiLUGradient(), savedIsInput: true)
        self = result
    }

    /// Records `name`, whose input gradient is `derivative` applied to the 8-bit copy of its input
    /// (`savedIsInput`) or output, dequantised inside the kernel.
    private mutating func recordCompressed<D: TernaryElementFunction>(
        _ name: String, input: Tensor, copy: Int8Copy, _ derivative: D, savedIsInput: Bool
    ) {
        recordOperation(name, inputs: [input]) { g, _ in [copy.zipped(with: g, savedSecond: savedIsInput, derivative)] }
    }

    /// How ``gelu(approximation:)`` evaluates the Gaussian CDF.
    public enum GELUApproximation: Sendable {
        /// Exact: `0.5·x·(1 + erf(x/√2))` (PyTorch's default).
        case none
        /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (PyTorch's `approximate="tanh"`).
        case tanh
    }

    public func gelu(approximation: GELUApproximation = .none) -> Tensor {
        switch approximation {
        case .none: return unary("gelu", Element.GELU(), Element.GELUGradient(), keeps: .input, compressible: true)
        case .tanh: return unary("gelu_tanh", Element.GELUTanh(), Element.GELUTanhGradient(), keeps: .input, compressible: true)
        }
    }

    /// This tensor broadcast (materialised) to `shape`; the gradient sums back.
    public func broadcast(to target: [Int]) -> Tensor {
        if shape == target { return self }
        precondition(Shape.broadcast(shape, target) == target, "cannot broadcast shape \(shape) to \(target)")
        var result = Tensor.broadcastElements(Tensor.zeros(target), detached(), Element.Second())
        let source = shape
        result.recordOperation("broadcast", inputs: [self]) { g, _ in [g.summed(toShape: source)] }
        return result
    }
}

/// Free-function spellings, as in NumPy and PyTorch.
public func exp(_ x: Tensor) -> Tensor { x.exp() }
public func log(_ x: Tensor) -> Tensor { x.log() }
public func sqrt(_ x: Tensor) -> Tensor { x.sqrt() }
public func tanh(_ x: Tensor) -> Tensor { x.tanh() }
public func abs(_ x: Tensor) -> Tensor { x.abs() }
public func relu(_ x: Tensor) -> Tensor { x.relu() }
public func sigmoid(_ x: Tensor) -> Tensor { x.sigmoid() }
public func silu(_ x: Tensor) -> Tensor { x.silu() }
public func gelu(_ x: Tensor, approximation: Tensor.GELUApproximation = .none) -> Tensor { x.gelu(approximation: approximation) }
