import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

extension GuardCommand {
    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Learn which tensors of a base UNet to freeze so that fine-tuning cannot learn the restricted domain.",
            discussion: """
            Bilevel mask learning (FreezeAsGuard): simulated user steps on restricted + permitted data alternate with \
            publisher steps that raise the restricted loss, keep the permitted loss low, and pull the frozen share to \
            --ratio. Writes the manifest (signed when --key is given) and a PNG of the soft mask per tensor. --select random: a \
            seeded ranking (the `random` baseline); attribution: relearn a copy on restricted data for --steps steps, rank each \
            tensor by how much holding it at its published value raises the restricted loss less the permitted one, per parameter.

            Example: permafrost guard learn --base runs/base --protocol far --ratio 0.5 --output guard.json --key publisher.key
            """
        )
        @Option(help: "Base UNet2DModel folder.") var base: String
        @Option(help: "Protocol defining restricted and permitted data: near or far (docs/PROTOCOLS.md).") var `protocol`: String = "far"
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
        @Option(help: "Simulated user's learning rate.") var userLearningRate: Float = 1e-3
        @Option(help: "Every N-th step is a publisher step.") var userInterval: Int = 5
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Output manifest.") var output: String = "guard.json"
        @Option(help: "Soft-mask plot (PNG).") var plot: String?
        @Flag(help: "Freeze the tensors whose soft mask ends above 0.5 (the paper's rule) instead of cutting the mask's ranking at --ratio.") var threshold = false
        @Option(help: "Private key to sign with (from `permafrost guard keygen`).") var key: String?
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let model = try UNet2DModel(directory: URL(fileURLWithPath: base))
            try requireCompatible(model)
            let (restricted, permitted) = try GuardProtocol.option(`protocol`).learningSets(try dataOptions.shipped())
            var settings = GuardSettings()
            settings.freezeRatio = ratio; settings.weightByParameters = byParameters; settings.steps = steps; settings.seed = seed
            settings.temperature = temperature; settings.sparsityWeight = sparsity; settings.maskLearningRate = maskLearningRate; settings.maskAdam = !maskSgd
            settings.ratioControl = ratioControl; settings.userLearningRate = userLearningRate; settings.userInterval = userInterval
            let bar = ProgressBar(total: steps, label: select == .attribution ? "relearn" : "guard")
            let mask = try select.diffusionMask(model: model, copy: { try UNet2DModel(directory: URL(fileURLWithPath: base)) }, restricted: restricted,
                                                permitted: permitted, learner: settings, batchSize: batch) { bar.update($0, detail: $1) }
            let fields = (select == .learnt ? settings.dictionary : ["seed": "\(seed)", "steps": "\(steps)"])
                .merging(["protocol": `protocol`, "selection": "\(select.rawValue), " + (threshold ? "soft mask > 0.5" : "ranking cut at the ratio")]) { $1 }
            let sizes = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, byParameters ? $0.parameter.value.count : 1) })
            let frozen = threshold ? mask.frozen : mask.frozen(ratio: Double(ratio), sizes: sizes)
            var manifest = try GuardManifest(model: model, frozen: frozen, baseSHA256: try sha256Hex(of: UNet2DModel.weightsURL(base)), settings: fields)
            if let key { try manifest.sign(with: try GuardKeys.privateKey(from: URL(fileURLWithPath: key))) }
            try manifest.write(to: URL(fileURLWithPath: output))
            if let plot { try Plot.bars(mask.softMask, to: URL(fileURLWithPath: plot)) }
            print(String(format: "guard: %d of %d tensors frozen (%.1f%% of tensors, %.1f%% of parameters)%@ → %@",
                         manifest.frozen.count, mask.names.count, manifest.freezeRatio * 100, manifest.freezeRatioParameters * 100,
                         key == nil ? " (unsigned: sign with `permafrost guard sign`)" : ", signed", output))
            if let trace = mask.traceSummary { print(trace) }
        }
    }
}
