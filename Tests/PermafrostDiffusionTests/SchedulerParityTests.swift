import Foundation
import XCTest
import PermafrostDiffusion
import PermafrostTensor

/// DDPM and DDIM against diffusers for the three beta schedules (`Scripts/fixtures/unet_parity.py`).
final class SchedulerParityTests: XCTestCase {
    struct Step: Decodable { var kind: String; var eta: Float?; var t: Int; var eps: [Float]; var sample: [Float]; var noise: [Float]; var prev: [Float] }
    struct AddNoise: Decodable { var x0: [Float]; var noise: [Float]; var timesteps: [Int]; var noisy: [Float] }
    struct Entry: Decodable {
        var alphas_cumprod: [Float]; var betas: [Float]; var add_noise: AddNoise
        var ddpm_timesteps_50: [Int]; var ddim_timesteps_20: [Int]; var steps: [Step]
    }

    func maxError(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    func testSchedulesAndStepsMatchDiffusers() throws {
        let entries = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: fixtureURL("schedulers.json")))
        XCTAssertEqual(Set(entries.keys), Set(BetaSchedule.allCases.map(\.rawValue)))
        let shape = [2, 1, 3, 3]
        for schedule in BetaSchedule.allCases {
            let entry = entries[schedule.rawValue]!
            let noise = NoiseSchedule(schedule)
            XCTAssertLessThanOrEqual(maxError(noise.betas, entry.betas), 1e-7, "\(schedule) betas")
            XCTAssertLessThanOrEqual(maxError(noise.alphasCumulativeProduct, entry.alphas_cumprod), 2e-6, "\(schedule) alphas_cumprod")
            let noisy = noise.addNoise(Tensor(shape: shape, scalars: entry.add_noise.x0), noise: Tensor(shape: shape, scalars: entry.add_noise.noise),
                                       timesteps: entry.add_noise.timesteps)
            XCTAssertLessThanOrEqual(maxError(noisy.scalars, entry.add_noise.noisy), 1e-5, "\(schedule) add_noise")

            var ddpm = DDPMScheduler(schedule: noise), ddim = DDIMScheduler(schedule: noise)
            ddpm.setTimesteps(50)
            ddim.setTimesteps(20)
            XCTAssertEqual(ddpm.timesteps, entry.ddpm_timesteps_50)
            XCTAssertEqual(ddim.timesteps, entry.ddim_timesteps_20)
            var generator = PhiloxGenerator(seed: 0)
            for step in entry.steps {
                let eps = Tensor(shape: shape, scalars: step.eps), sample = Tensor(shape: shape, scalars: step.sample)
                let z = Tensor(shape: shape, scalars: step.noise)
                let prev = step.kind == "ddpm"
                    ? ddpm.step(epsilon: eps, timestep: step.t, sample: sample, noise: z, generator: &generator)
                    : ddim.step(epsilon: eps, timestep: step.t, sample: sample, eta: step.eta ?? 0, noise: z, generator: &generator)
                XCTAssertLessThanOrEqual(maxError(prev.scalars, step.prev), 2e-5, "\(schedule) \(step.kind) eta=\(step.eta ?? 0) t=\(step.t)")
            }
        }
    }
}
