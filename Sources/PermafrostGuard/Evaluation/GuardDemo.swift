import Foundation
import PermafrostIO
import PermafrostModels

/// The whole guard story at a small scale (`permafrost demo`): a publisher makes a key pair, learns,
/// signs and verifies a guard for the far protocol; users fine-tune with and without it and with a
/// random mask of the same size; the samples are scored; the user's own guarded fine-tune (signed
/// guard, pinned key) proves every guarded tensor unchanged; the report lands in `output`.
public struct GuardDemo {
    public var base: URL
    public var classifier: URL
    public var output: URL
    public var data: ShippedData
    public var ratio: Double
    public var userSteps: Int
    public var guardSteps: Int
    public var perClass: Int

    public init(base: URL, classifier: URL, output: URL, data: ShippedData, ratio: Double, userSteps: Int, guardSteps: Int, perClass: Int) {
        self.base = base; self.classifier = classifier; self.output = output; self.data = data
        self.ratio = ratio; self.userSteps = userSteps; self.guardSteps = guardSteps; self.perClass = perClass
    }

    /// The demo's scale: one ratio, one random seed, batch 16, 20 DDIM steps.
    public var scale: EvaluationScale {
        var scale = EvaluationScale()
        scale.ratios = [ratio]; scale.randomSeeds = 1; scale.userSteps = userSteps; scale.userBatch = 16
        scale.guardSteps = guardSteps; scale.perClass = perClass; scale.ddimSteps = 20
        scale.methods = ["none", "full", "guard", "random"]
        return scale
    }

    /// Runs every step, logging each, and writes the outputs; returns the measured cells.
    public func run(log: @escaping (String) -> Void, guardProgress: @escaping (Double, GuardProgress) -> Void) throws -> [GuardResult] {
        log("1/5 base: \(base.path)")
        let baseModel = try UNet2DModel(directory: base)
        let weights = base.appendingPathComponent(UNet2DModel.weightsFileName)
        let digest = try sha256Hex(of: weights)
        let judge = try ImageClassifier.load(from: classifier)

        log("2/5 publisher: key pair and guard learning (far protocol, \(Int(ratio * 100))% of parameters)")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let privateKeyURL = output.appendingPathComponent("publisher.key"), publicKeyURL = output.appendingPathComponent("publisher.pub")
        _ = try GuardKeys.generate(privateKeyURL: privateKeyURL, publicKeyURL: publicKeyURL)
        let scale = self.scale
        guard let far = GuardProtocol.named("far") else { preconditionFailure("the far protocol is built in") }
        let evaluation = GuardEvaluation(spec: far, base: baseModel, baseDigest: digest, classifier: judge, scale: scale, data: data,
                                         log: log, guardProgress: guardProgress)
        let key = try GuardKeys.privateKey(from: privateKeyURL), trustedKey = try GuardKeys.publicKey(from: publicKeyURL)
        var guardManifest: GuardManifest?
        log("3/5 user fine-tuning with and without the guard, then sampling and scoring")
        let results = try evaluation.run { _, mask, frozen in
            var manifest = try GuardManifest(model: baseModel, frozen: frozen, baseSHA256: digest,
                                             settings: ["protocol": "far", "target_ratio_params": "\(ratio)", "steps": "\(guardSteps)"])
            try manifest.sign(with: key)
            try manifest.verifySignature(trustedKey: trustedKey)
            try manifest.verifyBase(weights)
            try manifest.write(to: output.appendingPathComponent("guard.json"))
            try Plot.bars(mask.softMask, to: output.appendingPathComponent("mask.png"))
            guardManifest = manifest
            log(String(format: "  guard: %d tensors (%.0f%% of parameters), signed and verified → guard.json", manifest.frozen.count, manifest.freezeRatioParameters * 100))
        }
        log("4/5 enforcement check: the user's guarded fine-tune (signed guard, pinned key) keeps every guarded tensor bit-identical")
        if let manifest = guardManifest {
            let run = try GuardedFineTune(base: try GuardedFineTune.Base(directory: base), guard: manifest, trustedPublisherKey: trustedKey,
                                          data: try evaluation.domains()[0].train,
                                          settings: FineTuneSettings(steps: userSteps, batchSize: scale.userBatch, learningRate: scale.userLearningRate, seed: 3))
            let report = try run.run()
            log(report.guardedTensorsBitIdentical == true ? "  all \(report.guardedTensors.count) guarded tensors bit-identical after fine-tuning"
                                                           : "  VIOLATION: \(report.changedGuardedTensors)")
        }
        log("5/5 report")
        try writeEvaluationOutputs(evaluation, results: results, protocolName: "far (demo scale)", command: "permafrost demo --output \(output.relativePath)",
                                   settings: scale.reportSettings, to: output)
        return results
    }
}

extension GuardDemo {
    /// The base and classifier a demo uses: the given paths, else the shipped ones beside the data
    /// folder; a missing one is an error saying how to make it.
    public static func shippedModels(data: ShippedData, base: String?, classifier: String?) throws -> (base: URL, classifier: URL) {
        let models = data.directory.deletingLastPathComponent().appendingPathComponent("Models")
        let baseURL = URL(fileURLWithPath: base ?? models.appendingPathComponent("base-0-5").path)
        guard FileManager.default.fileExists(atPath: baseURL.appendingPathComponent("config.json").path) else {
            throw DatasetError.notFound("no base model at \(baseURL.path): train one with `permafrost pretrain --digits 0-5 --output \(baseURL.path)` or pass --base")
        }
        let classifierURL = URL(fileURLWithPath: classifier ?? models.appendingPathComponent("classifier.safetensors").path)
        guard FileManager.default.fileExists(atPath: classifierURL.path) else {
            throw DatasetError.notFound("no classifier at \(classifierURL.path): train one with `permafrost classifier train --fashion 1,7,8 --output \(classifierURL.path)`")
        }
        return (baseURL, classifierURL)
    }
}
