import Foundation
import PermafrostModels
import PermafrostTensor

/// DDIM sampling from a class-conditional UNet.
public enum DiffusionSampler {
    /// `[n, C, H, W]` images in about [−1, 1] for the requested class slots, generated in batches of
    /// `batchSize` with `steps` DDIM steps. Deterministic for a seed: each batch draws its noise from
    /// its own Philox stream.
    public static func sample(model: UNet2DModel, classes: [Int], steps: Int = 50, eta: Float = 0, seed: UInt64 = 0,
                              schedule: NoiseSchedule = NoiseSchedule(), batchSize: Int = 64,
                              progress: ((Int, Int) -> Void)? = nil) -> Tensor {
        let size = model.config.sampleSize ?? 28
        var scheduler = DDIMScheduler(schedule: schedule)
        scheduler.setTimesteps(steps)
        var batches: [Tensor] = []
        let total = (classes.count + batchSize - 1) / Swift.max(batchSize, 1) * steps
        var done = 0
        for (batchIndex, start) in stride(from: 0, to: classes.count, by: batchSize).enumerated() {
            let labels = Array(classes[start..<Swift.min(classes.count, start + batchSize)])
            var generator = PhiloxGenerator(seed: seed, stream: UInt64(batchIndex))
            var x = Tensor(randomNormal: [labels.count, model.config.inChannels, size, size], generator: &generator)
            GradientRecording.withoutRecording {
                for t in scheduler.timesteps {
                    let epsilon = model(x, timesteps: [Float(t)], classLabels: model.config.numClassEmbeds == nil ? nil : labels)
                    x = scheduler.step(epsilon: epsilon, timestep: t, sample: x, eta: eta, generator: &generator)
                    done += 1
                    progress?(done, total)
                }
            }
            batches.append(x)
        }
        return Tensor.concatenate(batches, alongAxis: 0)
    }
}
