import Foundation
import PermafrostTensor

/// The shape and scale of low-rank adapters: the fields of PEFT's `LoraConfig` that Permafrost supports.
public struct LoRAConfiguration: Sendable, Equatable {
    /// r: the adapter's inner dimension.
    public var rank: Int
    /// lora_alpha: the update is scaled by alpha / rank (alpha / √rank with ``rankStabilized``).
    public var alpha: Float
    /// lora_dropout: dropout on the adapter's input while training.
    public var dropout: Float
    /// use_rslora: rank-stabilised scaling.
    public var rankStabilized: Bool

    public init(rank: Int = 8, alpha: Float = 8, dropout: Float = 0, rankStabilized: Bool = false) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.rankStabilized = rankStabilized
    }

    /// The factor applied to B·A.
    public var scale: Float { rankStabilized ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    /// Checks the values a user chose.
    public func validate() throws(LoRAError) {
        guard rank > 0 else { throw .invalidConfiguration("the rank must be positive, got \(rank)") }
        guard alpha.isFinite, alpha > 0 else { throw .invalidConfiguration("alpha must be a positive number, got \(alpha)") }
        guard dropout >= 0, dropout < 1 else { throw .invalidConfiguration("dropout must be in [0, 1), got \(dropout)") }
    }
}

/// A low-rank update ΔW = scale · B·A of one frozen weight (LoRA, arXiv 2106.09685).
///
/// `down` is PEFT's `lora_A` (inputs → `rank` features: a bias-free `Linear`, or a bias-free `Conv2d`
/// with the adapted convolution's kernel, stride and padding) and `up` is `lora_B` (`rank` → outputs:
/// a bias-free `Linear` or 1×1 `Conv2d`). B starts at zero, so an adapted model starts as its base.
/// The host layer registers them as its children `lora_A` and `lora_B`, so their tensors are named
/// `<module>.lora_A.weight` as in PEFT.
public final class LowRankAdapter {
    public let down: any Layer
    public let up: any Layer
    public let configuration: LoRAConfiguration
    let dropout: Dropout?

    init(down: any Layer, up: any Layer, configuration: LoRAConfiguration, seed: UInt64) {
        self.down = down
        self.up = up
        self.configuration = configuration
        dropout = configuration.dropout > 0 ? Dropout(configuration.dropout, seed: seed) : nil
    }

    /// `lora_A.weight` (`[rank, in]` or `[rank, in, kh, kw]`).
    public var downWeight: Parameter { down.parameter(named: "weight")! }
    /// `lora_B.weight` (`[out, rank]` or `[out, rank, 1, 1]`).
    public var upWeight: Parameter { up.parameter(named: "weight")! }

    /// The adapter's contribution to the host layer's output for `input`.
    func output(_ input: Tensor) -> Tensor {
        up(down(dropout.map { $0(input) } ?? input)) * configuration.scale
    }

    /// ΔW = scale · B·A in the shape of the adapted weight (`[out, in]` or `[out, in, kh, kw]`);
    /// differentiable in A and B.
    public func weightDelta() -> Tensor {
        let a = downWeight.value, b = upWeight.value
        let rank = a.shape[0]
        let product = b.reshaped([b.shape[0], rank]).matmul(a.reshaped([rank, a.count / rank]))
        return (product * configuration.scale).reshaped([b.shape[0]] + Array(a.shape.dropFirst()))
    }

    /// The modules the host registers: `lora_A`, `lora_B` and, with dropout, `lora_dropout`.
    var children: [(String, Module)] {
        [("lora_A", down), ("lora_B", up)] + (dropout.map { [("lora_dropout", $0 as Module)] } ?? [])
    }
}

/// A layer that can carry a ``LowRankAdapter``: `Linear`, `Conv2d` and `MultiheadAttention` (its
/// packed in-projection; its `out_proj` is a `Linear`).
public protocol LowRankAdaptable: Module {
    /// The adapter in use, if any.
    var adapter: LowRankAdapter? { get }
    /// The weights an adapter of this layer changes when merged (a guarded one forbids adapting it).
    var adaptedWeights: [(name: String, parameter: Parameter)] { get }
    /// A new adapter shaped for this layer (not attached).
    func makeAdapter(_ configuration: LoRAConfiguration, generator: inout PhiloxGenerator) throws(LoRAError) -> LowRankAdapter
    /// Attaches `adapter` (replacing any other) or, with nil, removes the adapter.
    func attach(_ adapter: LowRankAdapter?)
}

extension LowRankAdaptable {
    /// Adds the adapter's ΔW to the adapted weight and removes the adapter.
    public func mergeAdapter() {
        guard let adapter else { return }
        let weight = adaptedWeights[0].parameter
        weight.value = (weight.value + GradientRecording.withoutRecording { adapter.weightDelta() }).detached()
        attach(nil)
    }

    /// Takes ΔW of `adapter` (merged earlier) back out of the adapted weight and attaches it again.
    func unmerge(_ adapter: LowRankAdapter) {
        let weight = adaptedWeights[0].parameter
        weight.value = (weight.value - GradientRecording.withoutRecording { adapter.weightDelta() }).detached()
        attach(adapter)
    }
}

extension Module {
    /// Swaps the registered adapter children of a host layer.
    func replaceAdapterChildren(old: LowRankAdapter?, new: LowRankAdapter?) {
        for (name, _) in old?.children ?? [] { unregisterModule(name) }
        for (name, module) in new?.children ?? [] { register(name, module) }
    }
}

extension Linear: LowRankAdaptable {
    public var adaptedWeights: [(name: String, parameter: Parameter)] { [("weight", weight)] }

    public func makeAdapter(_ configuration: LoRAConfiguration, generator: inout PhiloxGenerator) throws(LoRAError) -> LowRankAdapter {
        try configuration.validate()
        let (out, inFeatures) = (weight.shape[0], weight.shape[1])
        let down = Linear(inFeatures, configuration.rank, bias: false, generator: &generator)
        let up = Linear(configuration.rank, out, bias: false, generator: &generator)
        up.weight.value = Tensor.zeros(up.weight.shape)
        return LowRankAdapter(down: down, up: up, configuration: configuration, seed: UInt64(generator.nextUInt32()))
    }
}

extension Conv2d: LowRankAdaptable {
    public var adaptedWeights: [(name: String, parameter: Parameter)] { [("weight", weight)] }

    public func makeAdapter(_ configuration: LoRAConfiguration, generator: inout PhiloxGenerator) throws(LoRAError) -> LowRankAdapter {
        try configuration.validate()
        // PEFT's convolution adapter carries kernel, stride and padding only.
        guard groups == 1, dilation == (1, 1) else {
            throw .unsupportedLayer(module: "", reason: "LoRA supports convolutions with groups = 1 and dilation 1 (got groups \(groups), dilation \(dilation))")
        }
        let (out, inChannels) = (weight.shape[0], weight.shape[1])
        let down = Conv2d(inChannels, configuration.rank, kernelSize: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding,
                          bias: false, generator: &generator)
        let up = Conv2d(configuration.rank, out, kernelSize: 1, bias: false, generator: &generator)
        up.weight.value = Tensor.zeros(up.weight.shape)
        return LowRankAdapter(down: down, up: up, configuration: configuration, seed: UInt64(generator.nextUInt32()))
    }
}

extension MultiheadAttention: LowRankAdaptable {
    public var adaptedWeights: [(name: String, parameter: Parameter)] { [("in_proj_weight", inProjectionWeight)] }

    /// The in-projection's adapter (`[rank, E]` and `[3E, rank]`); adapting the attention module
    /// through ``Module/addLowRankAdapters(matching:configuration:seed:)`` adapts `out_proj` too.
    public func makeAdapter(_ configuration: LoRAConfiguration, generator: inout PhiloxGenerator) throws(LoRAError) -> LowRankAdapter {
        try configuration.validate()
        let down = Linear(embedDimension, configuration.rank, bias: false, generator: &generator)
        let up = Linear(configuration.rank, 3 * embedDimension, bias: false, generator: &generator)
        up.weight.value = Tensor.zeros(up.weight.shape)
        return LowRankAdapter(down: down, up: up, configuration: configuration, seed: UInt64(generator.nextUInt32()))
    }

    /// The in-projection weight the forward pass uses: PEFT merges the adapter into it (no dropout).
    var effectiveInProjectionWeight: Tensor {
        adapter.map { inProjectionWeight.value + $0.weightDelta() } ?? inProjectionWeight.value
    }
}

/// Why adapters cannot be added, loaded, saved or merged.
public enum LoRAError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    case patternMatchedNothing(pattern: String, closest: [String])
    case unsupportedLayer(module: String, reason: String)
    /// An adapter would change a tensor a publisher's guard freezes.
    case guardedTarget(module: String, tensor: String)
    case alreadyAdapted(module: String)
    case unknownModule(name: String, closest: [String])
    case shapeMismatch(tensor: String, expected: [Int], actual: [Int])
    case missingTensor(String)
    case malformedAdapter(String)

    public var description: String {
        switch self {
        case let .invalidConfiguration(reason): return "invalid LoRA configuration: \(reason)"
        case let .patternMatchedNothing(pattern, closest):
            return "the LoRA target '\(pattern)' matches no Linear, Conv2d or MultiheadAttention module" + Self.suggestion(closest)
        case let .unsupportedLayer(module, reason): return "cannot adapt '\(module)': \(reason)"
        case let .guardedTarget(module, tensor):
            return "cannot adapt '\(module)': its tensor '\(tensor)' is frozen by the publisher's guard, and an adapter would change it"
        case let .alreadyAdapted(module): return "'\(module)' already has an adapter"
        case let .unknownModule(name, closest): return "the model has no adaptable module '\(name)'" + Self.suggestion(closest)
        case let .shapeMismatch(tensor, expected, actual):
            return "adapter tensor '\(tensor)' has shape \(actual), the model needs \(expected)"
        case let .missingTensor(name): return "the adapter lacks tensor '\(name)'"
        case let .malformedAdapter(reason): return "malformed adapter: \(reason)"
        }
    }

    private static func suggestion(_ closest: [String]) -> String {
        closest.isEmpty ? "" : "; closest modules: " + closest.map { "'\($0)'" }.joined(separator: ", ")
    }
}
