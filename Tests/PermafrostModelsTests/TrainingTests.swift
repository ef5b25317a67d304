import Foundation
import XCTest
import PermafrostDiffusion
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

final class DiffusionTrainingTests: XCTestCase {
    func tinyConfig() -> UNet2DConfig {
        var c = UNet2DConfig()
        c.sampleSize = 8; c.inChannels = 1; c.outChannels = 1
        c.blockOutChannels = [8, 16]; c.layersPerBlock = 1
        c.downBlockTypes = ["DownBlock2D", "AttnDownBlock2D"]; c.upBlockTypes = ["AttnUpBlock2D", "UpBlock2D"]
        c.normNumGroups = 4; c.attentionHeadDim = 4; c.numClassEmbeds = 3
        return c
    }

    func tinyData() -> LabeledImages {
        var g = PhiloxGenerator(seed: 1)
        let pixels = (0..<(12 * 64)).map { _ in UInt8(g.nextUInt32() % 256) }
        return LabeledImages(pixels: pixels, labels: (0..<12).map { $0 % 3 }, height: 8, width: 8)
    }

    func options(steps: Int) -> DiffusionTrainingOptions {
        var o = DiffusionTrainingOptions()
        o.steps = steps; o.batchSize = 4; o.learningRate = 1e-3; o.warmupSteps = 2; o.checkpointEvery = 3; o.seed = 9
        return o
    }

    /// Stopping after a checkpoint and resuming gives bit-identical weights, EMA and moments.
    func testResumedTrainingEqualsUninterruptedTraining() throws {
        let straight = DiffusionTrainer(model: try UNet2DModel(config: tinyConfig(), seed: 3), data: tinyData(), options: options(steps: 6))
        try straight.train(checkpointDirectory: nil) { _ in }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(UUID().uuidString)")
        let first = DiffusionTrainer(model: try UNet2DModel(config: tinyConfig(), seed: 3), data: tinyData(), options: options(steps: 3))
        try first.train(checkpointDirectory: directory) { _ in }
        let resumed = try DiffusionTrainer.resume(from: directory, data: tinyData(), steps: 6)
        XCTAssertEqual(resumed.step, 3)
        var reports = 0
        try resumed.train(checkpointDirectory: directory) { p in
            reports += 1
            XCTAssert(p.loss.isFinite)
        }
        XCTAssertEqual(reports, 3)
        for ((name, a), (_, b)) in zip(straight.model.stateDictionary(), resumed.model.stateDictionary()) {
            XCTAssertEqual(a.scalars, b.scalars, "\(name) differs after resume")
        }
        for ((name, a), (_, b)) in zip(try straight.averagedModel().stateDictionary(), try resumed.averagedModel().stateDictionary()) {
            XCTAssertEqual(a.scalars, b.scalars, "EMA of \(name) differs after resume")
        }
    }

    func testTrainingLowersTheLossAndSamplingIsDeterministic() throws {
        var o = options(steps: 40)
        o.learningRate = 3e-3
        o.emaDecay = nil
        let trainer = DiffusionTrainer(model: try UNet2DModel(config: tinyConfig(), seed: 3), data: tinyData(), options: o)
        var losses: [Float] = []
        try trainer.train(checkpointDirectory: nil) { losses.append($0.loss) }
        XCTAssertLessThan(losses.suffix(10).reduce(0, +) / 10, losses.prefix(10).reduce(0, +) / 10)
        let a = DiffusionSampler.sample(model: trainer.model, classes: [0, 1, 2], steps: 5, seed: 4)
        let b = DiffusionSampler.sample(model: trainer.model, classes: [0, 1, 2], steps: 5, seed: 4)
        XCTAssertEqual(a.shape, [3, 1, 8, 8])
        XCTAssertEqual(a.scalars, b.scalars)
        XCTAssert(a.scalars.allSatisfy { $0.isFinite })
    }
}

/// The classifier runs its convolutions 8 images at a time when it records gradients: the same
/// logits as the unchunked inference pass, and a frozen step that keeps less.
final class ClassifierChunkingTests: XCTestCase {
    func testChunkedTrainingForwardEqualsInferenceAndFrozenStepsPeakLower() throws {
        let model = ImageClassifier(classes: 10, seed: 3)
        var g = PhiloxGenerator(seed: 9)
        let images = Tensor(randomNormal: [40, 1, 28, 28], generator: &g)
        let inference = GradientRecording.withoutRecording { model.logits(images) }
        let training = model.logits(images)
        let largest = inference.scalars.map { Swift.abs($0) }.max()!
        let error = zip(training.scalars, inference.scalars).map { Swift.abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(error, 1e-5 * largest, "chunked training logits differ from the whole-batch pass")

        // Everything but the head frozen: the convolutions keep nothing, so a step's peak above
        // the weights is far below the first convolution's whole-batch output.
        let labels = (0..<40).map { $0 % 10 }
        try model.freeze(subtree: "body")
        let optimizer = Adam(learningRate: 1e-3)
        let before = MemoryStatistics.liveBytes
        let result = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model.logits(images), labels: labels) }
        let firstConvolutionOutput = 40 * 32 * 28 * 28 * 4
        XCTAssertLessThan(result.memory.peakBytes - before, firstConvolutionOutput / 2,
                          "step peak \(result.memory.peakBytes - before) B above what was live before it")
    }
}
