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
