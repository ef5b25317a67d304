import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

/// `permafrost demo`: the publisher's and the user's story, end to end, at a small scale.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole FreezeAsGuard story on the shipped data, in about 10 minutes on 2 cores.",
        discussion: """
        Loads the shipped base (a class-conditional UNet pretrained on MNIST digits 0–5) and evaluation classifier \
        (training them first if they are missing), creates a publisher key, learns and signs a guard for the far \
        protocol (restricted: Fashion trouser/sneaker/bag; permitted: digits 6–9), verifies it, fine-tunes with and \
        without it and with a random mask of the same size, and prints the table. Pictures and the signed guard.json \
        go to --output.
        """
    )
    @Option(name: [.customLong("output"), .customLong("out")], help: "Output folder (--out is an alias).") var output: String = "demo-output"
    @Option(help: "Base UNet folder.") var base: String?
    @Option(help: "Evaluation classifier.") var classifier: String?
    @Option(help: "Freeze ratio (fraction of parameters).") var ratio: Double = 0.5
    @Option(help: "User fine-tuning steps per run.") var userSteps: Int = 120
    @Option(help: "Guard learning steps.") var guardSteps: Int = 40
    @Option(help: "Samples per class.") var perClass: Int = 40
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let started = Date()
        let out = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let models = URL(fileURLWithPath: try dataOptions.directory().deletingLastPathComponent().path).appendingPathComponent("Models")
        let baseURL = URL(fileURLWithPath: base ?? models.appendingPathComponent("base-0-5").path)
        guard FileManager.default.fileExists(atPath: baseURL.appendingPathComponent("config.json").path) else {
            throw CLIError("no base model at \(baseURL.path): train one with `permafrost pretrain --digits 0-5 --output \(baseURL.path)` or pass --base")
        }
        note("1/5 base: \(baseURL.path)")
        let baseModel = try UNet2DModel(directory: baseURL)
        try requireCompatible(baseModel)
        let digest = try sha256Hex(of: baseURL.appendingPathComponent(UNet2DModel.weightsFileName))
        let classifierURL = URL(fileURLWithPath: classifier ?? models.appendingPathComponent("classifier.safetensors").path)
        guard FileManager.default.fileExists(atPath: classifierURL.path) else {
            throw CLIError("no classifier at \(classifierURL.path): train one with `permafrost classifier train --fashion 1,7,8 --output \(classifierURL.path)`")
        }
        let judge = try ImageClassifier.load(from: classifierURL)

        note("2/5 publisher: key pair and guard learning (far protocol, \(Int(ratio * 100))% of parameters)")
        _ = try GuardKeys.generate(privateKeyURL: out.appendingPathComponent("publisher.key"), publicKeyURL: out.appendingPathComponent("publisher.pub"))
        var scale = EvaluationScale()
        scale.ratios = [ratio]; scale.randomSeeds = 1; scale.userSteps = userSteps; scale.userBatch = 16
        scale.guardSteps = guardSteps; scale.perClass = perClass; scale.ddimSteps = 20
        scale.methods = ["none", "full", "guard", "random"]
        let evaluation = GuardEvaluation(spec: try GuardProtocol.option("far"), base: baseModel, baseDigest: digest, classifier: judge,
                                         scale: scale, data: try dataOptions.shipped(), log: { note($0) }, guardProgress: GuardProgressBars().update)
        let key = try GuardKeys.privateKey(from: out.appendingPathComponent("publisher.key"))
        let trustedKey = try GuardKeys.publicKey(from: out.appendingPathComponent("publisher.pub"))
        var guardManifest: GuardManifest?
        note("3/5 user fine-tuning with and without the guard, then sampling and scoring")
        let results = try evaluation.run { _, mask, frozen in
            var manifest = try GuardManifest(model: baseModel, frozen: frozen, baseSHA256: digest,
                                             settings: ["protocol": "far", "target_ratio_params": "\(ratio)", "steps": "\(guardSteps)"])
            try manifest.sign(with: key)
            try manifest.verifySignature(trustedKey: trustedKey)
            try manifest.verifyBase(baseURL.appendingPathComponent(UNet2DModel.weightsFileName))
            try manifest.write(to: out.appendingPathComponent("guard.json"))
            try Plot.bars(mask.softMask, to: out.appendingPathComponent("mask.png"))
            guardManifest = manifest
            note(String(format: "  guard: %d tensors (%.0f%% of parameters), signed and verified → guard.json", manifest.frozen.count, manifest.freezeRatioParameters * 100))
        }
        note("4/5 enforcement check: the user's guarded fine-tune (signed guard, pinned key) keeps every guarded tensor bit-identical")
        if let manifest = guardManifest {
            let run = try GuardedFineTune(base: try GuardedFineTune.Base(directory: baseURL), guard: manifest, trustedPublisherKey: trustedKey,
                                          data: try evaluation.domains()[0].train,
                                          settings: FineTuneSettings(steps: userSteps, batchSize: scale.userBatch, learningRate: scale.userLearningRate, seed: 3))
            let report = try run.run()
            note(report.guardedTensorsBitIdentical == true ? "  all \(report.guardedTensors.count) guarded tensors bit-identical after fine-tuning"
                                                            : "  VIOLATION: \(report.changedGuardedTensors)")
        }
        note("5/5 report")
        try writeEvaluationOutputs(evaluation, results: results, protocolName: "far (demo scale)", command: "permafrost demo --output \(output)",
                                   settings: ["user_steps": "\(userSteps)", "user_batch": "\(scale.userBatch)", "guard_steps": "\(guardSteps)",
                                                  "per_class": "\(perClass)", "ddim_steps": "\(scale.ddimSteps)", "eta": "\(scale.eta)",
                                                  "guard_selection": "soft-mask ranking cut at the target ratio",
                                                  "guard_ratio_control": scale.learner.ratioControl.rawValue, "guard_mask_lr": "\(scale.learner.maskLearningRate)"], to: out)
        print(markdownTable(results))
        print(String(format: "\nfinished in %@; outputs in %@ (guard.json, publisher.pub, report.md, frontier.png, mask.png, grid-*.png)",
                     ProgressBar.clock(Date().timeIntervalSince(started)), out.path))
    }
}
