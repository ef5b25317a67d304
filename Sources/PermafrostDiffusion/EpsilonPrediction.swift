import PermafrostIO
import PermafrostModels
import PermafrostTensor

/// One batch of epsilon-prediction training: clean images, their class slots, the Gaussian noise
/// added, the timesteps it was added at, and the noised images the model sees.
public struct NoisedBatch {
    public var images: Tensor
    public var labels: [Int]?
    public var noise: Tensor
    public var timesteps: [Int]
    public var noisy: Tensor
}

extension NoiseSchedule {
    /// Noises `images`: draws the noise, then one timestep per image, from `generator`.
    public func noised(_ images: Tensor, labels: [Int]?, generator: inout PhiloxGenerator) -> NoisedBatch {
        let noise = Tensor(randomNormal: images.shape, generator: &generator)
        let timesteps = (0..<images.shape[0]).map { _ in Int(generator.nextUInt32()) % trainTimesteps }
        return NoisedBatch(images: images, labels: labels, noise: noise, timesteps: timesteps,
                           noisy: addNoise(images, noise: noise, timesteps: timesteps))
    }

    /// Draws `size` images of `data` (with replacement), then their noise and timesteps, all from
    /// `generator`: a training step keyed by a Philox stream is reproducible, resumed or not.
    public func batch(of data: LabeledImages, size: Int, generator: inout PhiloxGenerator) -> NoisedBatch {
        let indices = (0..<size).map { _ in Int(generator.nextUInt32()) % data.count }
        return noised(data.batch(indices), labels: indices.map { data.labels[$0] }, generator: &generator)
    }
}

/// The epsilon-prediction loss of DDPM training: the mean squared error between the model's noise
/// prediction ε̂(x_t, t, c) and the noise ε that made x_t. Every trainer, guard learner and
/// benchmark of a diffusion model calls this one definition.
public func epsilonPredictionLoss(_ model: UNet2DModel, on batch: NoisedBatch) -> Tensor {
    meanSquaredError(model(batch.noisy, timesteps: batch.timesteps.map(Float.init), classLabels: batch.labels), batch.noise)
}

/// The epsilon-prediction loss of `model` on a batch of `data` drawn by the Philox stream
/// (`seed`, `stream`): what a guard learner evaluates for its restricted and permitted losses.
public func epsilonPredictionLoss(_ model: UNet2DModel, data: LabeledImages, schedule: NoiseSchedule,
                                  batchSize: Int, seed: UInt64, stream: UInt64) -> Tensor {
    var generator = PhiloxGenerator(seed: seed, stream: stream)
    return epsilonPredictionLoss(model, on: schedule.batch(of: data, size: batchSize, generator: &generator))
}
