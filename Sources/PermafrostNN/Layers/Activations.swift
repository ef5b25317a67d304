import PermafrostTensor

/// Parameter-free layers, so `Sequential` indices match PyTorch's.
public final class ReLU: Module, Layer {
    public override init() { super.init() }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.relu() }
    /// In place when nothing else holds the buffer (a previous layer's fresh output): exact, since
    /// ReLU's backward needs only the sign mask of its output.
    public func apply(to tensor: inout Tensor) { tensor.formReLU() }
}

public final class SiLU: Module, Layer {
    public override init() { super.init() }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.silu() }
}

public final class GELU: Module, Layer {
    public let approximation: Tensor.GELUApproximation
    public init(approximation: Tensor.GELUApproximation = .none) { self.approximation = approximation; super.init() }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.gelu(approximation: approximation) }
}

public final class Tanh: Module, Layer {
    public override init() { super.init() }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.tanh() }
}

public final class Sigmoid: Module, Layer {
    public override init() { super.init() }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.sigmoid() }
}

/// `nn.Flatten()`: keeps axis 0, flattens the rest.
public final class Flatten: Module, Layer {
    public override init() { super.init() }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.reshaped([input.shape[0], -1]) }
}

/// `nn.AvgPool2d(kernel, stride)`.
public final class AvgPool2d: Module, Layer {
    public let kernel: (Int, Int), stride: (Int, Int)
    public init(kernel: Int, stride: Int? = nil) {
        self.kernel = (kernel, kernel)
        self.stride = (stride ?? kernel, stride ?? kernel)
        super.init()
    }
    public func callAsFunction(_ input: Tensor) -> Tensor { input.averagePooled(kernel: kernel, stride: stride) }
}
