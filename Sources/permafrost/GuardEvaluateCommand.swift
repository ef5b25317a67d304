import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

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

            A BERT base takes the text protocol: at each ratio a learnt guard and a random mask over the encoder, each and full \
            fine-tuning run on the user's half of the review snippets (one epoch, three labels); plot recall (restricted) and \
            sentiment accuracy (permitted) on the test split; --ratios, --methods (full, guard, random), --guard-steps, \
            --user-batch, --mask-learning-rate, --ratio-control and --key apply, the sampling options do not. Writes \
            report.json, report.md and the guards.

            Example: permafrost guard evaluate --base Models/base-0-5 --classifier Models/classifier.safetensors --protocol far --output runs/far
                     permafrost guard evaluate --base Models/all-MiniLM-L6-v2 --ratios 0.5 --output runs/text-guard
            """
        )
        @Option(help: "Base folder: a UNet pretrained on digits 0–5 (16 slots), or a BERT (the text protocol).") var base: String
        @Option(help: "13-class evaluation classifier (`permafrost classifier train --fashion 1,7,8`); UNet protocols only.") var classifier: String?
        @Option(help: "near or far (a BERT base: text).") var `protocol`: String = "far"
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
            if try ModelFamily(path: base) == .bert { return try evaluateText() }
            guard let classifier else { throw ValidationError("--classifier: the image protocols score samples with a classifier") }
            var scale = EvaluationScale()
            scale.ratios = try ratios.split(separator: ",").map { guard let v = Double($0), v > 0, v < 1 else { throw ValidationError("--ratios: fractions in (0, 1)") }; return v }
            scale.methods = Set(methods.split(separator: ",").map(String.init))
            scale.randomSeeds = randomSeeds; scale.userSteps = userSteps; scale.userBatch = userBatch
            scale.guardSteps = guardSteps; scale.perClass = perClass; scale.ddimSteps = ddimSteps
            scale.learner.ratioControl = ratioControl; scale.learner.maskLearningRate = maskLearningRate
            let out = URL(fileURLWithPath: output)
            let baseModel = try UNet2DModel(directory: URL(fileURLWithPath: base))
            try requireCompatible(baseModel)
            let digest = try sha256Hex(of: UNet2DModel.weightsURL(base))
            let evaluation = GuardEvaluation(spec: try GuardProtocol.option(`protocol`), base: baseModel, baseDigest: digest,
                                             classifier: try ImageClassifier.load(from: URL(fileURLWithPath: classifier)),
                                             scale: scale, data: try dataOptions.shipped(), log: { note($0) }, guardProgress: GuardProgressBars().update)
            let signingKey = try key.map { try GuardKeys.privateKey(from: URL(fileURLWithPath: $0)) }
            let results = try evaluation.run { ratio, mask, frozen in
                try evaluation.saveGuard(frozen: frozen, mask: mask, ratio: ratio, signingKey: signingKey, to: out,
                                         settings: ["protocol": self.protocol, "ratio_control": ratioControl.rawValue, "mask_lr": "\(maskLearningRate)"])
            }
            let command = "permafrost guard evaluate " + CommandLine.arguments.dropFirst(3).joined(separator: " ")
            try writeEvaluationOutputs(evaluation, results: results, protocolName: `protocol`, command: command,
                                       settings: scale.reportSettings, to: out)
            print(markdownTable(results))
            print("wrote \(out.path)/report.json, report.md, frontier.png, grid-*.png")
        }

        func evaluateText() throws {
            var evaluation = TextGuardEvaluation(baseDirectory: URL(fileURLWithPath: base), textProtocol: try TextGuardProtocol(try dataOptions.shipped()))
            evaluation.ratios = try ratios.split(separator: ",").map { guard let v = Double($0), v > 0, v < 1 else { throw ValidationError("--ratios: fractions in (0, 1)") }; return v }
            evaluation.methods = Set(methods.split(separator: ",").map(String.init))
            evaluation.fineTune.batch = userBatch; evaluation.learner.steps = guardSteps; evaluation.learner.maskLearningRate = maskLearningRate; evaluation.learner.ratioControl = ratioControl
            let out = URL(fileURLWithPath: output)
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let signingKey = try key.map { try GuardKeys.privateKey(from: URL(fileURLWithPath: $0)) }
            var bar: ProgressBar?
            var report = try evaluation.run(log: { note($0); bar = nil }, guardProgress: { p in
                if bar == nil { bar = ProgressBar(total: p.totalSteps, label: "guard") }
                bar?.update(p.step, detail: String(format: "L_r %.3f L_p %.3f", p.restrictedLoss, p.permittedLoss))
            }, fineTuneProgress: { step, total, loss in
                if bar == nil { bar = ProgressBar(total: total, label: "fine-tune") }
                bar?.update(step, detail: String(format: "loss %.4f", loss))
            }) { method, ratio, manifest in
                var manifest = manifest
                if let signingKey { try manifest.sign(with: signingKey) }
                try manifest.write(to: out.appendingPathComponent("\(method)-\(Int((ratio * 100).rounded())).json"))
            }
            report.command = "permafrost guard evaluate " + CommandLine.arguments.dropFirst(3).joined(separator: " ")
            try AtomicFile.writeJSON(report, to: out.appendingPathComponent("report.json"))
            try AtomicFile.write(Data((report.markdown + "\n").utf8), to: out.appendingPathComponent("report.md"))
            print(report.markdown)
            print("wrote \(out.path)/report.json, report.md, guard-*.json, random-*.json")
        }
    }
}
