import PermafrostTensor

/// A module with a single-tensor forward pass, composable in a ``Sequential``.
public protocol Layer: Module {
    func callAsFunction(_ input: Tensor) -> Tensor
    /// Replaces `tensor` with this layer's output. ``Sequential`` calls it, so a layer whose
    /// result can overwrite its input's buffer exactly (ReLU) saves a batch-sized buffer; the
    /// default is `tensor = self(tensor)`.
    func apply(to tensor: inout Tensor)
}

extension Layer {
    public func apply(to tensor: inout Tensor) { tensor = self(tensor) }
}

/// Layers applied in order; children are named `0`, `1`, … as in `torch.nn.Sequential`, so
/// parameter-free layers (activations) keep the indices PyTorch gives.
public final class Sequential: Module, Layer {
    public let layers: [any Layer]

    public init(_ layers: [any Layer]) {
        self.layers = layers
        super.init()
        for (index, layer) in layers.enumerated() { register(String(index), layer) }
    }

    /// When set, a forward pass that records gradients runs the first `leadingLayers` layers over
    /// chunks of `rowsPerChunk` rows of the batch (``Tensor/mapBatchChunks(rowsPerChunk:_:)``):
    /// the same result, with those layers' intermediate outputs a chunk in size. Only for layers
    /// that treat batch rows independently.
    public var leadingChunks: (leadingLayers: Int, rowsPerChunk: Int)? {
        didSet {
            if let chunks = leadingChunks {
                precondition(chunks.leadingLayers >= 0 && chunks.leadingLayers <= layers.count && chunks.rowsPerChunk > 0,
                             "leadingChunks \(chunks) does not fit \(layers.count) layers")
            }
        }
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        var h = input
        var remaining = layers[...]
        // Inference keeps no activations, so it runs whole batches (fewer, larger kernel calls).
        if let chunks = leadingChunks, GradientRecording.isRecording {
            let leading = layers.prefix(chunks.leadingLayers)
            h = input.mapBatchChunks(rowsPerChunk: chunks.rowsPerChunk) { chunk in
                var c = chunk
                for layer in leading { layer.apply(to: &c) }
                return c
            }
            remaining = layers.dropFirst(chunks.leadingLayers)
        }
        for layer in remaining { layer.apply(to: &h) }
        return h
    }
}

/// `y = x·Wᵀ + b` with `weight` `[out, in]` (PyTorch's layout).
public final class Linear: Module, Layer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, generator: inout PhiloxGenerator) {
        weight = Parameter(Initializers.kaimingUniformDefault([outFeatures, inFeatures], fanIn: inFeatures, generator: &generator))
        self.bias = bias ? Parameter(Initializers.biasUniform([outFeatures], fanIn: inFeatures, generator: &generator)) : nil
        super.init()
        register("weight", weight)
        if let b = self.bias { register("bias", b) }
    }

    /// A low-rank adapter trained beside the frozen weight (``LowRankAdaptable``).
    public private(set) var adapter: LowRankAdapter?

    public func attach(_ adapter: LowRankAdapter?) {
        replaceAdapterChildren(old: self.adapter, new: adapter)
        self.adapter = adapter
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        precondition(input.shape.last == weight.shape[1],
                     "Linear expects inputs with last axis \(weight.shape[1]), got shape \(input.shape)")
        let output = input.linear(weight: weight.value, bias: bias?.value)
        return adapter.map { output + $0.output(input) } ?? output
    }
}

/// 2-D convolution with PyTorch's `nn.Conv2d` parameters and names.
public final class Conv2d: Module, Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1, bias: Bool = true,
                generator: inout PhiloxGenerator) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0,
                     "Conv2d: groups=\(groups) must divide in (\(inChannels)) and out (\(outChannels)) channels")
        let fanIn = inChannels / groups * kernelSize.0 * kernelSize.1
        weight = Parameter(Initializers.kaimingUniformDefault([outChannels, inChannels / groups, kernelSize.0, kernelSize.1], fanIn: fanIn, generator: &generator))
        self.bias = bias ? Parameter(Initializers.biasUniform([outChannels], fanIn: fanIn, generator: &generator)) : nil
        self.stride = stride; self.padding = padding; self.dilation = dilation; self.groups = groups
        super.init()
        register("weight", weight)
        if let b = self.bias { register("bias", b) }
    }

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                            groups: Int = 1, bias: Bool = true, generator: inout PhiloxGenerator) {
        self.init(inChannels, outChannels, kernelSize: (kernelSize, kernelSize), stride: (stride, stride),
                  padding: (padding, padding), groups: groups, bias: bias, generator: &generator)
    }

    /// A low-rank adapter trained beside the frozen weight (``LowRankAdaptable``).
    public private(set) var adapter: LowRankAdapter?

    public func attach(_ adapter: LowRankAdapter?) {
        replaceAdapterChildren(old: self.adapter, new: adapter)
        self.adapter = adapter
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        let output = input.conv2d(filter: weight.value, bias: bias?.value, stride: stride, padding: padding, dilation: dilation, groups: groups)
        return adapter.map { output + $0.output(input) } ?? output
    }
}

/// `nn.GroupNorm`: `weight` and `bias` of shape `[C]` (ones and zeros at init).
public final class GroupNorm: Module, Layer {
    public let groups: Int, epsilon: Float
    public let weight: Parameter?, bias: Parameter?

    public init(groups: Int, channels: Int, epsilon: Float = 1e-5, affine: Bool = true) {
        precondition(groups > 0 && channels % groups == 0, "GroupNorm: \(groups) groups do not divide \(channels) channels")
        self.groups = groups; self.epsilon = epsilon
        weight = affine ? Parameter(Tensor.ones([channels])) : nil
        bias = affine ? Parameter(Tensor.zeros([channels])) : nil
        super.init()
        if let weight { register("weight", weight) }
        if let bias { register("bias", bias) }
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        input.groupNormalized(groups: groups, scale: weight?.value, shift: bias?.value, epsilon: epsilon)
    }
}

/// `nn.LayerNorm` over the trailing `normalizedShape`.
public final class LayerNorm: Module, Layer {
    public let normalizedShape: [Int], epsilon: Float
    public let weight: Parameter?, bias: Parameter?

    public init(_ normalizedShape: [Int], epsilon: Float = 1e-5, affine: Bool = true) {
        self.normalizedShape = normalizedShape; self.epsilon = epsilon
        weight = affine ? Parameter(Tensor.ones(normalizedShape)) : nil
        bias = affine ? Parameter(Tensor.zeros(normalizedShape)) : nil
        super.init()
        if let weight { register("weight", weight) }
        if let bias { register("bias", bias) }
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        precondition(Array(input.shape.suffix(normalizedShape.count)) == normalizedShape,
                     "LayerNorm over \(normalizedShape) got input shape \(input.shape)")
        return input.layerNormalized(normalizedAxes: normalizedShape.count, scale: weight?.value, shift: bias?.value, epsilon: epsilon)
    }
}

/// `nn.Embedding`: a `[count, dimension]` table initialised N(0, 1).
public final class Embedding: Module {
    public let weight: Parameter

    public init(_ count: Int, _ dimension: Int, generator: inout PhiloxGenerator) {
        weight = Parameter(Tensor(randomNormal: [count, dimension], generator: &generator))
        super.init()
        register("weight", weight)
    }

    /// Rows for `indices`, shaped `indexShape + [dimension]`.
    public func callAsFunction(_ indices: [Int], shape: [Int]? = nil) -> Tensor {
        weight.value.gatheringRows(indices, indexShape: shape)
    }
}

/// Inverted dropout, active only in training mode; its own seeded generator advances each call.
public final class Dropout: Module, Layer {
    public let probability: Float
    private var generator: PhiloxGenerator

    public init(_ probability: Float, seed: UInt64 = 0) {
        precondition(probability >= 0 && probability < 1, "Dropout probability must be in [0, 1), got \(probability)")
        self.probability = probability
        generator = PhiloxGenerator(seed: seed)
        super.init()
    }

    public func callAsFunction(_ input: Tensor) -> Tensor {
        isTraining ? input.dropout(probability: probability, generator: &generator) : input
    }
}
