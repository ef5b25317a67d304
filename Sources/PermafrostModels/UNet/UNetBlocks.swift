import Foundation
import PermafrostNN
import PermafrostTensor

/// diffusers' `ResnetBlock2D` (pre-norm, `time_embedding_norm="default"`, SiLU):
/// `x + conv2(drop(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb))))))`, with a 1×1 shortcut
/// when the channel count changes.
public final class ResnetBlock2D: Module {
    let norm1: GroupNorm, conv1: Conv2d, timeEmbeddingProjection: Linear
    let norm2: GroupNorm, dropout: Dropout, conv2: Conv2d
    let convShortcut: Conv2d?

    init(inChannels: Int, outChannels: Int, timeChannels: Int, groups: Int, epsilon: Float, dropout: Float, generator: inout PhiloxGenerator) {
        norm1 = GroupNorm(groups: groups, channels: inChannels, epsilon: epsilon)
        conv1 = Conv2d(inChannels, outChannels, kernelSize: 3, padding: 1, generator: &generator)
        timeEmbeddingProjection = Linear(timeChannels, outChannels, generator: &generator)
        norm2 = GroupNorm(groups: groups, channels: outChannels, epsilon: epsilon)
        self.dropout = Dropout(dropout, seed: UInt64(generator.nextUInt32()))
        conv2 = Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1, generator: &generator)
        convShortcut = inChannels != outChannels ? Conv2d(inChannels, outChannels, kernelSize: 1, generator: &generator) : nil
        super.init()
        register("norm1", norm1)
        register("conv1", conv1)
        register("time_emb_proj", timeEmbeddingProjection)
        register("norm2", norm2)
        register("conv2", conv2)
        if let convShortcut { register("conv_shortcut", convShortcut) }
    }

    /// `activatedTime` is `silu(temb)` (`[B, T]`), shared by every block.
    func callAsFunction(_ x: Tensor, activatedTime: Tensor) -> Tensor {
        var h = conv1(activated(norm1, x))
        let t = timeEmbeddingProjection(activatedTime)
        h = h + t.reshaped([t.shape[0], t.shape[1], 1, 1])
        h = conv2(dropout.probability > 0 ? dropout(activated(norm2, h)) : activated(norm2, h))
        return (convShortcut.map { $0(x) } ?? x) + h
    }
}

/// diffusers' spatial self-attention (`Attention` with `_from_deprecated_attn_block`): group norm,
/// q/k/v projections over the H·W positions, multi-head scaled dot-product attention, output
/// projection `to_out.0`, residual.
public final class SpatialAttention: Module {
    let groupNorm: GroupNorm
    let query: Linear, key: Linear, value: Linear
    let output: Sequential
    let heads: Int

    init(channels: Int, headDimension: Int, groups: Int, epsilon: Float, generator: inout PhiloxGenerator) {
        groupNorm = GroupNorm(groups: groups, channels: channels, epsilon: epsilon)
        query = Linear(channels, channels, generator: &generator)
        key = Linear(channels, channels, generator: &generator)
        value = Linear(channels, channels, generator: &generator)
        output = Sequential([Linear(channels, channels, generator: &generator)])
        heads = channels / headDimension
        super.init()
        register("group_norm", groupNorm)
        register("to_q", query)
        register("to_k", key)
        register("to_v", value)
        register("to_out", output)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let d = c / heads
        let tokens = groupNorm(x).reshaped([b, c, h * w]).permuted([0, 2, 1])
        func split(_ t: Tensor) -> Tensor { t.reshaped([b, h * w, heads, d]).permuted([0, 2, 1, 3]) }
        let attended = scaledDotProductAttention(query: split(query(tokens)), key: split(key(tokens)), value: split(value(tokens)))
        let merged = attended.permuted([0, 2, 1, 3]).reshaped([b, h * w, c])
        return output(merged).permuted([0, 2, 1]).reshaped([b, c, h, w]) + x
    }
}

extension ResnetBlock2D {
    /// A block with the config's group count, epsilon and dropout.
    convenience init(inChannels: Int, outChannels: Int, timeChannels: Int, config: UNet2DConfig, generator: inout PhiloxGenerator) {
        self.init(inChannels: inChannels, outChannels: outChannels, timeChannels: timeChannels, groups: config.normNumGroups,
                  epsilon: config.normEpsilon, dropout: config.dropout, generator: &generator)
    }
}

extension SpatialAttention {
    /// An attention block with the config's group count and epsilon.
    convenience init(channels: Int, headDimension: Int, config: UNet2DConfig, generator: inout PhiloxGenerator) {
        self.init(channels: channels, headDimension: headDimension, groups: config.normNumGroups, epsilon: config.normEpsilon, generator: &generator)
    }
}

/// The resnets of a down or up block (one per entry of `inputChannels`), each followed by an
/// attention block when `attention`; initialised in diffusers' order (resnet, then its attention).
func resnetStack(inputChannels: [Int], outChannels: Int, timeChannels: Int, attention: Bool, headDimension: Int,
                 config: UNet2DConfig, generator: inout PhiloxGenerator) -> (ModuleList<ResnetBlock2D>, ModuleList<SpatialAttention>?) {
    var blocks: [ResnetBlock2D] = [], attentions: [SpatialAttention] = []
    for channels in inputChannels {
        blocks.append(ResnetBlock2D(inChannels: channels, outChannels: outChannels, timeChannels: timeChannels, config: config, generator: &generator))
        if attention { attentions.append(SpatialAttention(channels: outChannels, headDimension: headDimension, config: config, generator: &generator)) }
    }
    return (ModuleList(blocks), attention ? ModuleList(attentions) : nil)
}

/// A 3×3 convolution holder named `conv`, as diffusers' `Downsample2D` / `Upsample2D`.
final class ConvHolder: Module {
    let conv: Conv2d
    init(_ conv: Conv2d) {
        self.conv = conv
        super.init()
        register("conv", conv)
    }
}

/// `DownBlock2D` / `AttnDownBlock2D`: resnets (each followed by attention in the attention
/// variant), then an optional stride-2 convolution. Returns the output and the skip tensors.
public final class DownBlock: Module {
    let resnets: ModuleList<ResnetBlock2D>
    let attentions: ModuleList<SpatialAttention>?
    let downsampler: ModuleList<ConvHolder>?

    init(layers: Int, inChannels: Int, outChannels: Int, timeChannels: Int, attention: Bool, downsample: Bool,
         headDimension: Int, config: UNet2DConfig, generator: inout PhiloxGenerator) {
        (resnets, attentions) = resnetStack(inputChannels: (0..<layers).map { $0 == 0 ? inChannels : outChannels }, outChannels: outChannels,
                                            timeChannels: timeChannels, attention: attention, headDimension: headDimension,
                                            config: config, generator: &generator)
        downsampler = downsample ? ModuleList([ConvHolder(Conv2d(outChannels, outChannels, kernelSize: 3, stride: 2, padding: 1, generator: &generator))]) : nil
        super.init()
        if let attentions { register("attentions", attentions) }
        register("resnets", resnets)
        if let downsampler { register("downsamplers", downsampler) }
    }

    func callAsFunction(_ x: Tensor, activatedTime: Tensor) -> (Tensor, [Tensor]) {
        var h = x
        var skips: [Tensor] = []
        for i in 0..<resnets.count {
            h = resnets[i](h, activatedTime: activatedTime)
            if let attentions { h = attentions[i](h) }
            skips.append(h)
        }
        if let downsampler {
            h = downsampler[0].conv(h)
            skips.append(h)
        }
        return (h, skips)
    }
}

/// `UpBlock2D` / `AttnUpBlock2D`: each resnet takes the running tensor concatenated with one skip
/// tensor (last first), then optional attention; then an optional nearest ×2 upsample and 3×3 conv.
public final class UpBlock: Module {
    let resnets: ModuleList<ResnetBlock2D>
    let attentions: ModuleList<SpatialAttention>?
    let upsampler: ModuleList<ConvHolder>?

    init(layers: Int, inChannels: Int, previousOutChannels: Int, outChannels: Int, timeChannels: Int, attention: Bool,
         upsample: Bool, headDimension: Int, config: UNet2DConfig, generator: inout PhiloxGenerator) {
        // Resnet i sees the running tensor (the previous block's output first) concatenated with a skip.
        let inputs = (0..<layers).map { i in (i == 0 ? previousOutChannels : outChannels) + (i == layers - 1 ? inChannels : outChannels) }
        (resnets, attentions) = resnetStack(inputChannels: inputs, outChannels: outChannels, timeChannels: timeChannels,
                                            attention: attention, headDimension: headDimension, config: config, generator: &generator)
        upsampler = upsample ? ModuleList([ConvHolder(Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1, generator: &generator))]) : nil
        super.init()
        if let attentions { register("attentions", attentions) }
        register("resnets", resnets)
        if let upsampler { register("upsamplers", upsampler) }
    }

    func callAsFunction(_ x: Tensor, skips: inout [Tensor], activatedTime: Tensor) -> Tensor {
        var h = x
        for i in 0..<resnets.count {
            let skip = skips.removeLast()
            h = resnets[i](Tensor.concatenate([h, skip], alongAxis: 1), activatedTime: activatedTime)
            if let attentions { h = attentions[i](h) }
        }
        if let upsampler { h = upsampler[0].conv(h.upsampledNearest2x()) }
        return h
    }
}

/// `UNetMidBlock2D`: resnet, (attention, resnet).
public final class MidBlock: Module {
    let resnets: ModuleList<ResnetBlock2D>
    let attentions: ModuleList<SpatialAttention>?

    init(channels: Int, timeChannels: Int, attention: Bool, headDimension: Int, config: UNet2DConfig, generator: inout PhiloxGenerator) {
        let first = ResnetBlock2D(inChannels: channels, outChannels: channels, timeChannels: timeChannels, config: config, generator: &generator)
        let attn = attention ? SpatialAttention(channels: channels, headDimension: headDimension, config: config, generator: &generator) : nil
        let second = ResnetBlock2D(inChannels: channels, outChannels: channels, timeChannels: timeChannels, config: config, generator: &generator)
        resnets = ModuleList([first, second])
        attentions = attn.map { ModuleList([$0]) }
        super.init()
        if let attentions { register("attentions", attentions) }
        register("resnets", resnets)
    }

    func callAsFunction(_ x: Tensor, activatedTime: Tensor) -> Tensor {
        var h = resnets[0](x, activatedTime: activatedTime)
        if let attentions { h = attentions[0](h) }
        return resnets[1](h, activatedTime: activatedTime)
    }
}

/// `silu(norm(x))`, the activation applied in the norm's fresh output buffer when it can be (see
/// ``Tensor/formSiLU()``): the UNet's largest forward-pass transient.
func activated(_ norm: GroupNorm, _ x: Tensor) -> Tensor {
    var a = norm(x)
    a.formSiLU()
    return a
}
