import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
public final class TimestepEmbedding: Module {
    let linear1: Linear, linear2: Linear
    init(inChannels: Int, dimension: Int, generator: inout PhiloxGenerator) {
        linear1 = Linear(inChannels, dimension, generator: &generator)
        linear2 = Linear(dimension, dimension, generator: &generator)
        super.init()
        register("linear_1", linear1)
        register("linear_2", linear2)
    }
    func callAsFunction(_ x: Tensor) -> Tensor { linear2(linear1(x).silu()) }
}

/// A diffusers-compatible `UNet2DModel`: same config, same parameter names, same outputs.
///
/// ```swift
/// let unet = try UNet2DModel(directory: URL(fileURLWithPath: "ddpm-mnist"))   // a save_pretrained folder
/// let epsilon = unet(noisy, timesteps: [500, 20], classLabels: [3, 7])
/// try unet.save(directory: output)                                           // loads in diffusers
/// ```
public final class UNet2DModel: Module {
    public let config: UNet2DConfig
    let convIn: Conv2d
    let timeEmbedding: TimestepEmbedding
    let classEmbedding: Embedding?
    let downBlocks: ModuleList<DownBlock>
    let upBlocks: ModuleList<UpBlock>
    let midBlock: MidBlock?
    let convNormOut: GroupNorm
    let convOut: Conv2d

    /// A randomly initialised model (PyTorch's default initialisations, seeded).
    public init(config: UNet2DConfig, seed: UInt64 = 0) throws(ModelConfigError) {
        try config.validate()
        self.config = config
        var g = PhiloxGenerator(seed: seed)
        let channels = config.blockOutChannels
        let timeDim = config.timeEmbedDimension
        convIn = Conv2d(config.inChannels, channels[0], kernelSize: 3, padding: 1, generator: &g)
        timeEmbedding = TimestepEmbedding(inChannels: channels[0], dimension: timeDim, generator: &g)
        classEmbedding = config.numClassEmbeds.map { Embedding($0, timeDim, generator: &g) }
        var downs: [DownBlock] = []
        var output = channels[0]
        for (i, type) in config.downBlockTypes.enumerated() {
            let input = output
            output = channels[i]
            downs.append(DownBlock(layers: config.layersPerBlock, inChannels: input, outChannels: output, timeChannels: timeDim,
                                   attention: type == "AttnDownBlock2D", downsample: i < channels.count - 1,
                                   headDimension: config.attentionHeadDim ?? output, config: config, generator: &g))
        }
        downBlocks = ModuleList(downs)
        midBlock = config.midBlockType == nil ? nil : MidBlock(channels: channels.last!, timeChannels: timeDim, attention: config.addAttention,
                                                                headDimension: config.attentionHeadDim ?? channels.last!, config: config, generator: &g)
        let reversed = Array(channels.reversed())
        var ups: [UpBlock] = []
        output = reversed[0]
        for (i, type) in config.upBlockTypes.enumerated() {
            let previous = output
            output = reversed[i]
            let input = reversed[min(i + 1, channels.count - 1)]
            ups.append(UpBlock(layers: config.layersPerBlock + 1, inChannels: input, previousOutChannels: previous, outChannels: output,
                               timeChannels: timeDim, attention: type == "AttnUpBlock2D", upsample: i < channels.count - 1,
                               headDimension: config.attentionHeadDim ?? output, config: config, generator: &g))
        }
        upBlocks = ModuleList(ups)
        convNormOut = GroupNorm(groups: config.normNumGroups, channels: channels[0], epsilon: config.normEpsilon)
        convOut = Conv2d(channels[0], config.outChannels, kernelSize: 3, padding: 1, generator: &g)
        super.init()
        register("conv_in", convIn)
        register("time_embedding", timeEmbedding)
        if let classEmbedding { register("class_embedding", classEmbedding) }
        register("down_blocks", downBlocks)
        register("up_blocks", upBlocks)
        if let midBlock { register("mid_block", midBlock) }
        register("conv_norm_out", convNormOut)
        register("conv_out", convOut)
    }

    /// diffusers' `get_timestep_embedding` in Float32, as PyTorch computes it.
    public static func sinusoidalEmbedding(timesteps: [Float], dimension: Int, flipSinToCos: Bool, freqShift: Int) -> Tensor {
        let half = dimension / 2
        let logPeriod = Float(Foundation.log(10_000.0))
        let frequencies = (0..<half).map { i in Foundation.exp(-logPeriod * Float(i) / Float(half - freqShift)) }
        return Tensor(shape: [timesteps.count, dimension]) { out in
            for (row, t) in timesteps.enumerated() {
                for i in 0..<half {
                    let angle = t * frequencies[i]
                    let (first, second) = flipSinToCos ? (Foundation.cos(angle), Foundation.sin(angle)) : (Foundation.sin(angle), Foundation.cos(angle))
                    out[row * dimension + i] = first
                    out[row * dimension + half + i] = second
                }
                if dimension % 2 == 1 { out[row * dimension + dimension - 1] = 0 }
            }
        }
    }

    /// The predicted noise for `sample` (`[B, C, H, W]`) at `timesteps` (one per sample, or one for
    /// all) with optional class labels (required when the model is class-conditional).
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], classLabels: [Int]? = nil) -> Tensor {
        precondition(sample.rank == 4 && sample.shape[1] == config.inChannels,
                     "UNet2DModel expects [B, \(config.inChannels), H, W], got \(sample.shape)")
        let batch = sample.shape[0]
        precondition(timesteps.count == batch || timesteps.count == 1, "\(timesteps.count) timesteps for a batch of \(batch)")
        let times = timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch)
        let projected = Self.sinusoidalEmbedding(timesteps: times, dimension: config.blockOutChannels[0],
                                                 flipSinToCos: config.flipSinToCos, freqShift: config.freqShift)
        var embedding = timeEmbedding(projected)
        if let classEmbedding {
            guard let classLabels else { preconditionFailure("class_labels are required: this model is class-conditional") }
            precondition(classLabels.count == batch, "\(classLabels.count) class labels for a batch of \(batch)")
            embedding = embedding + classEmbedding(classLabels)
        } else {
            precondition(classLabels == nil, "class_labels given, but the model has no class embedding (num_class_embeds is null)")
        }
        let activatedTime = embedding.silu()
        var h = convIn(sample)
        var skips = [h]
        for block in downBlocks.modules {
            let (out, blockSkips) = block(h, activatedTime: activatedTime)
            h = out
            skips += blockSkips
        }
        if let midBlock { h = midBlock(h, activatedTime: activatedTime) }
        for block in upBlocks.modules { h = block(h, skips: &skips, activatedTime: activatedTime) }
        return convOut(activated(convNormOut, h))
    }

    // MARK: - diffusers folders

    public static let weightsFileName = "diffusion_pytorch_model.safetensors"

    /// Loads a diffusers `save_pretrained` folder (`config.json` + `diffusion_pytorch_model.safetensors`).
    public convenience init(directory: URL) throws {
        let configURL = directory.appendingPathComponent("config.json")
        let data: Data
        do { data = try Data(contentsOf: configURL) } catch {
            throw ModelConfigError.unreadable(path: configURL.path, reason: (error as NSError).localizedDescription)
        }
        try self.init(config: try UNet2DConfig(json: data))
        try load(contentsOf: directory.appendingPathComponent(Self.weightsFileName))
    }

    /// Writes a folder diffusers' `UNet2DModel.from_pretrained` loads unchanged.
    public func save(directory: URL, metadata: [String: String] = [:]) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var fields = metadata
        fields["format"] = "pt"
        try save(to: directory.appendingPathComponent(Self.weightsFileName), metadata: fields)
        do { try AtomicFile.write(config.jsonData(), to: directory.appendingPathComponent("config.json")) } catch {
            throw SafetensorsError.unwritable(path: directory.appendingPathComponent("config.json").path, reason: error.reason)
        }
    }
}
