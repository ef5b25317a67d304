import PermafrostTensor

/// PyTorch's default initialisations, drawn from Permafrost's seeded generator (same distributions
/// as PyTorch, not the same bits).
public enum Initializers {
    /// `kaiming_uniform_(a=√5)` as `nn.Linear` and `nn.Conv2d` use it: U(−b, b) with b = 1/√fanIn.
    public static func kaimingUniformDefault(_ shape: [Int], fanIn: Int, generator: inout PhiloxGenerator) -> Tensor {
        let bound = 1 / Float(Swift.max(fanIn, 1)).squareRoot()
        return Tensor(randomUniform: shape, lower: -bound, upper: bound, generator: &generator)
    }

    /// The bias init of `nn.Linear`/`nn.Conv2d`: U(−1/√fanIn, 1/√fanIn).
    public static func biasUniform(_ shape: [Int], fanIn: Int, generator: inout PhiloxGenerator) -> Tensor {
        kaimingUniformDefault(shape, fanIn: fanIn, generator: &generator)
    }

    /// `xavier_uniform_`: U(−b, b) with b = √(6/(fanIn + fanOut)).
    public static func xavierUniform(_ shape: [Int], fanIn: Int, fanOut: Int, generator: inout PhiloxGenerator) -> Tensor {
        let bound = (6 / Float(fanIn + fanOut)).squareRoot()
        return Tensor(randomUniform: shape, lower: -bound, upper: bound, generator: &generator)
    }
}
