import ArgumentParser
import Foundation
import PermafrostDiffusion
import PermafrostIO
import PermafrostModels

/// `permafrost sample`: DDIM samples as a PNG grid.
struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate images with DDIM from a saved UNet and write them as a PNG grid (one row per class).",
        discussion: "Example: permafrost sample --model runs/mnist-unet --classes 0-9 --per-class 8 --output samples.png"
    )

    @Option(help: "A diffusers UNet2DModel folder.") var model: String
    @Option(help: "Class slots, e.g. 0-9 or 10,11,12.") var classes: String = "0-9"
    @Option(help: "Images per class.") var perClass: Int = 8
    @Option(help: "DDIM steps.") var steps: Int = 50
    @Option(help: "DDIM eta (0 deterministic, 1 DDPM-like).") var eta: Float = 0
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output PNG.") var output: String = "samples.png"
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        guard perClass > 0, steps > 0 else { throw ValidationError("--per-class and --steps must be positive") }
        let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
        let slots = try parseRanges(classes, name: "--classes")
        if let limit = unet.config.numClassEmbeds, let bad = slots.first(where: { $0 < 0 || $0 >= limit }) {
            throw ValidationError("class slot \(bad) is outside the model's \(limit) slots")
        }
        let requested = slots.flatMap { Array(repeating: $0, count: perClass) }
        let bar = ProgressBar(total: (requested.count + 63) / 64 * steps, label: "sample")
        let images = DiffusionSampler.sample(model: unet, classes: requested, steps: steps, eta: eta, seed: seed) { done, _ in bar.update(done) }
        try ImageGrid.write(images, columns: perClass, to: URL(fileURLWithPath: output))
        print("wrote \(output): \(slots.count) classes × \(perClass) images")
    }
}
