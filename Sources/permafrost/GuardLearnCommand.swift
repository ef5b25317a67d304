import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

extension GuardCommand {
    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Learn which tensors of a base model (a diffusers UNet or a BERT) to freeze so that fine-tuning cannot learn the restricted domain.",
            discussion: """
            Bilevel mask learning (FreezeAsGuard): simulated user steps on restricted + permitted data alternate with \
            publisher steps that raise the restricted loss, keep the permitted loss low, and pull the frozen share to \
            --ratio. Writes the manifest (signed when --key is given) and a PNG of the soft mask per tensor. --select random: a \
            seeded ranking (the `random` baseline); attribution: relearn a copy on restricted data for --steps steps, rank each \
            tensor by how much holding it at its published value raises the restricted loss less the permitted one, per parameter.
            A BERT folder (config.json with model_type bert, e.g. all-MiniLM-L6-v2) takes the text protocol: restricted = learning to \
            recognise `plot` review snippets, permitted = their sentiment; the mask covers the encoder's tensors (the head is the user's).

            Example: permafrost guard learn --base runs/base --protocol far --ratio 0.5 --output guard.json --key publisher.key
                     permafrost guard learn --base Models/all-MiniLM-L6-v2 --ratio 0.5 --by-parameters --output text-guard.json
            """
        )
        @Option(help: "Base model folder: a diffusers UNet2DModel or a BERT.") var base: String
        @Option(help: "Protocol defining restricted and permitted data: near or far for a UNet, text for a BERT (docs/PROTOCOLS.md). (default: far, or text for a BERT)") var `protocol`: String?
        @Option(help: "Target freeze ratio.") var ratio: Float = 0.5
        @Flag(help: "Count the ratio in parameters instead of tensors.") var byParameters = false
        @Option(help: "Selection: learnt (bilevel mask), random or attribution.") var select: GuardSelection = .learnt
        @Option(help: "Learning steps (attribution: the relearning fine-tune's steps).") var steps: Int = 100
        @Option(help: "Batch size of each loss.") var batch: Int = 16
        @Option(help: "Mask temperature T.") var temperature: Float = 0.2
        @Option(help: "Sparsity weight c.") var sparsity: Float = 500
        @Option(help: "Mask learning rate (Adam; with --mask-sgd the paper's plain gradient descent, whose rate was 3e2).") var maskLearningRate: Float = 0.1
        @Flag(help: "Update the mask logits by plain gradient descent, as the paper's code does.") var maskSgd = false
        @Option(help: "Ratio control: penalty (the paper's c·(ratio − mean m)²) or projection (exact ratio by a shared offset; logits by normalised gradient descent).") var ratioControl: GuardSettings.RatioControl = .penalty
        @Option(help: "Simulated user's learning rate (default: 1e-3 for a UNet, 5e-5 for a BERT).") var userLearningRate: Float?
        @Option(help: "Every N-th step is a publisher step.") var userInterval: Int = 5
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Output manifest.") var output: String = "guard.json"
        @Option(help: "Soft-mask plot (PNG).") var plot: String?
        @Flag(help: "Freeze the tensors whose soft mask ends above 0.5 (the paper's rule) instead of cutting the mask's ranking at --ratio.") var threshold = false
        @Option(help: "Private key to sign with (from `permafrost guard keygen`).") var key: String?
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        var settings: GuardSettings {
            var settings = GuardSettings()
            settings.freezeRatio = ratio; settings.weightByParameters = byParameters; settings.steps = steps; settings.seed = seed
            settings.temperature = temperature; settings.sparsityWeight = sparsity; settings.maskLearningRate = maskLearningRate; settings.maskAdam = !maskSgd
            settings.ratioControl = ratioControl; settings.userLearningRate = userLearningRate ?? 1e-3; settings.userInterval = userInterval
            return settings
        }

        func run() throws {
            try engine.apply()
            switch try ModelFamily(path: base) {
            case .bert: try learnTextGuard()
            case .unet: try learnDiffusionGuard()
            }
        }

        func learnTextGuard() throws {
            guard (`protocol` ?? TextGuardProtocol.name) == TextGuardProtocol.name else {
                throw ValidationError("a BERT base takes the text protocol, not '\(`protocol` ?? "")'")
            }
            let folder = URL(fileURLWithPath: base)
            let model = try BertClassifier(directory: folder, classes: TextGuardProtocol.labels.count, seed: seed)
            let textProtocol = try TextGuardProtocol(try dataOptions.shipped())
            var settings = self.settings
            settings.userLearningRate = userLearningRate ?? 5e-5  // a pretrained encoder's fine-tuning rate
            let bar = ProgressBar(total: steps, label: "guard")
            let (frozen, mask) = try textProtocol.learnGuard(model: model, tokenizer: try WordPieceTokenizer(directory: folder), selection: select,
                                                            settings: settings, batchSize: batch) { p in
                bar.update(p.step, detail: String(format: "L_r %.3f L_p %.3f", p.restrictedLoss, p.permittedLoss))
            }
            let fields = (select == .learnt ? settings.dictionary : ["seed": "\(seed)"])
                .merging(["protocol": TextGuardProtocol.name, "family": ModelFamily.bert.rawValue, "selection": "\(select.rawValue), ranking cut without passing the ratio"]) { $1 }
            try write(try GuardManifest(model: model.bert, frozen: frozen, baseSHA256: try sha256Hex(of: ModelFamily.bert.weightsURL(base)), settings: fields), mask: mask)
        }

        /// Signs (with --key), writes, plots and reports a learnt guard.
        func write(_ manifest: GuardManifest, mask: LearnedMask) throws {
            var manifest = manifest
            if let key { try manifest.sign(with: try GuardKeys.privateKey(from: URL(fileURLWithPath: key))) }
            try manifest.write(to: URL(fileURLWithPath: output))
            if let plot { try Plot.bars(mask.softMask, to: URL(fileURLWithPath: plot)) }
            print(String(format: "guard: %d of %d tensors frozen (%.1f%% of tensors, %.1f%% of parameters)%@ → %@",
                         manifest.frozen.count, mask.names.count, manifest.freezeRatio * 100, manifest.freezeRatioParameters * 100,
                         key == nil ? " (unsigned: sign with `permafrost guard sign`)" : ", signed", output))
            if let trace = mask.traceSummary { print(trace) }
        }

        func learnDiffusionGuard() throws {
            let `protocol` = self.protocol ?? "far"
            let model = try UNet2DModel(directory: URL(fileURLWithPath: base))
            try requireCompatible(model)
            let (restricted, permitted) = try GuardProtocol.option(`protocol`).learningSets(try dataOptions.shipped())
            let settings = self.settings
            let bar = ProgressBar(total: steps, label: select == .attribution ? "relearn" : "guard")
            let mask = try select.diffusionMask(model: model, copy: { try UNet2DModel(directory: URL(fileURLWithPath: base)) }, restricted: restricted,
                                                permitted: permitted, learner: settings, batchSize: batch) { bar.update($0, detail: $1) }
            let fields = (select == .learnt ? settings.dictionary : ["seed": "\(seed)", "steps": "\(steps)"])
                .merging(["protocol": `protocol`, "selection": "\(select.rawValue), " + (threshold ? "soft mask > 0.5" : "ranking cut at the ratio")]) { $1 }
            let sizes = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, byParameters ? $0.parameter.value.count : 1) })
            let frozen = threshold ? mask.frozen : mask.frozen(ratio: Double(ratio), sizes: sizes)
            try write(try GuardManifest(model: model, frozen: frozen, baseSHA256: try sha256Hex(of: UNet2DModel.weightsURL(base)), settings: fields), mask: mask)
        }
    }
}
