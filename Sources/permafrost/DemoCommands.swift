import ArgumentParser
import Crypto
import Foundation
import PermafrostDiffusion
import PermafrostFreeze
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Writes report.json, report.md, the frontier plot and comparison grids of an evaluation.
func writeEvaluationOutputs(_ evaluation: GuardEvaluation, results: [GuardResult], protocolName: String, command: String,
                            settings: [String: String], to out: URL) throws {
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
    let report = GuardReport(protocol: protocolName, command: command, settings: settings, results: results)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    try AtomicFile.write(try encoder.encode(report), to: out.appendingPathComponent("report.json"))
    let markdown = """
    # Guard evaluation — \(protocolName) protocol

    Command: `\(command)`

    Recognition rate: share of generated images the evaluation classifier assigns to the requested content
    (for `restricted-malicious-slots`, the restricted content taught under unused slots 13–15). FID: Fréchet
    distance in the classifier's 128-d feature space against real test images of the same classes.

    ## Summary

    \(goalSummary(results))

    ## Every cell

    \(markdownTable(results))

    Pictures: `grid-*.png` (rows: classes; columns: samples), `frontier.png` (x: permitted recognition,
    y: restricted recognition; blue guard, gray random, orange magnitude, green contrast, red full fine-tuning, black none).
    """
    try AtomicFile.write(Data(markdown.utf8), to: out.appendingPathComponent("report.md"))

    // Frontier: mean permitted vs mean restricted recognition per (method, target).
    func mean(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }
    var series: [(points: [(Float, Float)], color: Plot.Color)] = []
    for (method, color) in [("guard", Plot.Color.blue), ("random", .gray), ("magnitude", .orange), ("contrast", .green), ("full", .red), ("none", .black)] {
        let rows = results.filter { $0.method == method }
        let targets = Set(rows.map { $0.target_ratio ?? -1 }).sorted()
        let points: [(Float, Float)] = targets.map { t in
            let at = rows.filter { ($0.target_ratio ?? -1) == t }
            return (Float(mean(at.filter { $0.domain.hasPrefix("permitted") }.map(\.recognition_rate))),
                    Float(mean(at.filter { $0.domain.hasPrefix("restricted") }.map(\.recognition_rate))))
        }
        if !points.isEmpty { series.append((points, color)) }
    }
    try Plot.scatter(series, to: out.appendingPathComponent("frontier.png"))

    // Grids: for each domain, the first 8 samples per class of none / full / guard / random.
    for (key, images) in evaluation.pictures {
        let parts = key.split(separator: "|").map(String.init)
        let (method, target, seed, domain) = (parts[0], Double(parts[1]) ?? -1, parts[2], parts[3])
        guard seed == "0" || method != "random" else { continue }
        let name = "grid-\(domain)-\(method)\(target >= 0 ? "-\(Int(target * 100))" : "").png"
        let perClass = evaluation.scale.perClass
        let classes = images.shape[0] / max(perClass, 1)
        var picked: [Tensor] = []
        for c in 0..<classes { picked.append(images.slice(alongAxis: 0, from: c * perClass, to: c * perClass + min(8, perClass))) }
        try ImageGrid.write(Tensor.concatenate(picked, alongAxis: 0), columns: min(8, perClass), to: out.appendingPathComponent(name))
    }
}

extension GuardCommand {
    struct EvaluateGuard: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "evaluate",
            abstract: "Run a guard evaluation protocol (docs/PROTOCOLS.md): guard vs full, random, magnitude and no fine-tuning.",
            discussion: """
            For each freeze ratio it learns a guard, draws random masks (several seeds) and a magnitude mask at the same \
            parameter ratio, fine-tunes the base on the restricted data (under its own slots and under unused slots 13–15) \
            and on each permitted domain with identical settings, then measures recognition rate and FID of the samples.
            Writes report.json, report.md, frontier.png, grid-*.png and the signed guards.

            Example: permafrost guard evaluate --base Models/base-0-5 --classifier Models/classifier.safetensors --protocol far --output runs/far
            """
        )
        @Option(help: "Base UNet folder (pretrained on digits 0–5, 16 slots).") var base: String
        @Option(help: "13-class evaluation classifier (`permafrost classifier train --fashion 1,7,8`).") var classifier: String
        @Option(help: "near or far.") var `protocol`: String = "far"
        @Option(help: "Target freeze ratios (fractions of parameters).") var ratios: String = "0.3,0.5,0.7,0.9"
        @Option(help: "Methods: none,full,guard,random,magnitude,contrast (contrast: the tensors that move most under restricted relative to permitted fine-tuning).") var methods: String = "none,full,guard,random,magnitude"
        @Option(help: "Random-mask seeds.") var randomSeeds: Int = 3
        @Option(help: "User fine-tuning steps.") var userSteps: Int = 300
        @Option(help: "User batch size.") var userBatch: Int = 32
        @Option(help: "Guard learning steps.") var guardSteps: Int = 100
        @Option(help: "Samples per class (≥ 200 in the protocol).") var perClass: Int = 200
        @Option(help: "DDIM steps of the scoring samples (eta 1).") var ddimSteps: Int = 6
        @Option(help: "Guard learner's ratio control: penalty (the paper's) or projection (exact ratio, normalised steps; see GuardSettings.RatioControl).") var ratioControl: GuardSettings.RatioControl = .penalty
        @Option(help: "Guard learner's mask learning rate (default 0.1).") var maskLearningRate: Float = 0.1
        @Option(help: "Private key to sign the learnt guards.") var key: String?
        @Option(help: "Output folder.") var output: String
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            var scale = EvaluationScale()
            scale.ratios = try ratios.split(separator: ",").map { guard let v = Double($0), v > 0, v < 1 else { throw ValidationError("--ratios: fractions in (0, 1)") }; return v }
            scale.methods = Set(methods.split(separator: ",").map(String.init))
            scale.randomSeeds = randomSeeds; scale.userSteps = userSteps; scale.userBatch = userBatch
            scale.guardSteps = guardSteps; scale.perClass = perClass; scale.ddimSteps = ddimSteps
            scale.learner.ratioControl = ratioControl; scale.learner.maskLearningRate = maskLearningRate
            let out = URL(fileURLWithPath: output)
            let baseModel = try UNet2DModel(directory: URL(fileURLWithPath: base))
            try requireCompatible(baseModel)
            let digest = try sha256Hex(of: weightsURL(base))
            let evaluation = GuardEvaluation(spec: try GuardProtocol.named(`protocol`), base: baseModel, baseDigest: digest,
                                             classifier: try ImageClassifier.load(from: URL(fileURLWithPath: classifier)),
                                             scale: scale, dataOptions: dataOptions, log: { note($0) })
            let signingKey = try key.map { try GuardKeys.privateKey(from: URL(fileURLWithPath: $0)) }
            let results = try evaluation.run { ratio, mask, frozen in
                var manifest = try GuardManifest(model: baseModel, frozen: frozen, baseSHA256: digest, settings: ["protocol": self.protocol, "target_ratio_params": "\(ratio)",
                                                                                                                   "ratio_control": ratioControl.rawValue, "mask_lr": "\(maskLearningRate)"])
                if let signingKey { try manifest.sign(with: signingKey) }
                try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
                try manifest.write(to: out.appendingPathComponent("guard-\(Int(ratio * 100)).json"))
                try Plot.bars(mask.softMask, to: out.appendingPathComponent("mask-\(Int(ratio * 100)).png"))
            }
            let command = "permafrost guard evaluate " + CommandLine.arguments.dropFirst(3).joined(separator: " ")
            try writeEvaluationOutputs(evaluation, results: results, protocolName: `protocol`, command: command,
                                       settings: ["user_steps": "\(userSteps)", "user_batch": "\(userBatch)", "guard_steps": "\(guardSteps)",
                                                  "per_class": "\(perClass)", "ddim_steps": "\(ddimSteps)", "eta": "\(scale.eta)",
                                                  "guard_selection": "soft-mask ranking cut at the target ratio",
                                                  "guard_ratio_control": ratioControl.rawValue, "guard_mask_lr": "\(maskLearningRate)"], to: out)
            print(markdownTable(results))
            print("wrote \(out.path)/report.json, report.md, frontier.png, grid-*.png")
        }
    }
}

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
        let evaluation = GuardEvaluation(spec: try GuardProtocol.named("far"), base: baseModel, baseDigest: digest, classifier: judge,
                                         scale: scale, dataOptions: dataOptions, log: { note($0) })
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
        note("4/5 enforcement check: a guarded fine-tune keeps every guarded tensor bit-identical")
        if let manifest = guardManifest {
            let (tuned, _, _) = try evaluation.finetune(frozen: Set(manifest.frozen), data: try evaluation.domains()[0].train, seed: 3)
            let changed = try manifest.changedTensors(in: tuned)
            note(changed.isEmpty ? "  all \(manifest.frozen.count) guarded tensors bit-identical after fine-tuning" : "  VIOLATION: \(changed)")
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
