import ArgumentParser
import Foundation
import PermafrostDiffusion
import PermafrostEval
import PermafrostIO
import PermafrostModels

/// `permafrost evaluate`: recognition rate and FID of generated images.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure a UNet's samples with the evaluation classifier: recognition rate per class and FID against real test images.",
        discussion: "Example: permafrost evaluate --model runs/mnist-unet --classifier runs/classifier.safetensors --classes 0-9"
    )

    @Option(help: "A diffusers UNet2DModel folder.") var model: String
    @Option(help: "Classifier from `permafrost classifier train`.") var classifier: String
    @Option(help: "Class slots to generate (0–9 digits, 10–12 Fashion trouser/sneaker/bag).") var classes: String = "0-9"
    @Option(help: "Samples per class (the protocols use ≥ 200).") var perClass: Int = 200
    @Option(help: "DDIM steps.") var steps: Int = 25
    @Option(help: "DDIM eta (0 deterministic, 1 DDPM-like).") var eta: Float = 0
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Also write a PNG grid of the first 10 samples per class here.") var grid: String?
    @Option(help: "Classes the samples of some slots should show, as SLOT:CLASS pairs (e.g. 6:10 for trousers taught as 6).") var expect: String?
    @Option(help: "Count a sample only when the classifier's probability for its class is at least this (0: the top class counts).") var minConfidence: Float = 0
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let (unet, judge) = (try UNet2DModel(directory: URL(fileURLWithPath: model)), try ImageClassifier.load(from: URL(fileURLWithPath: classifier)))
        let slots = try parseRanges(classes, name: "--classes")
        let requested = slots.flatMap { Array(repeating: $0, count: perClass) }
        let bar = ProgressBar(total: (requested.count + 63) / 64 * steps, label: "sample")
        let images = DiffusionSampler.sample(model: unet, classes: requested, steps: steps, eta: eta, seed: seed) { done, _ in bar.update(done) }
        let expected = try LabeledImages.labelMapping(expect ?? "")
        let real = try dataOptions.shipped().testImages(showing: Set(slots.map { expected[$0] ?? $0 }))
        let result = try SampleEvaluation(classifier: judge, images: images, requested: requested, expected: expected, real: real.batch(Array(0..<real.count)),
                                          minimumConfidence: minConfidence)
        if let grid {
            try ImageGrid.write(SampleEvaluation.firstSamples(of: images, requested: requested, slots: slots, count: 10),
                                columns: min(10, perClass), to: URL(fileURLWithPath: grid))
        }
        print(json ? try result.json() : result.summary(slots: slots, realImages: real.count))
    }
}
