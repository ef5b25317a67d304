import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// `permafrost finetune`: the user's fine-tuning, with a publisher's guard enforced.
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a base UNet on chosen digits / Fashion classes, enforcing a publisher's signed guard.",
        discussion: """
        With --guard, the guard's signature (against --publisher-key when given) and its base digest must verify, \
        or nothing runs. Guarded tensors get no gradient and no optimizer state; a user's --plan may freeze more, \
        never less. At the end every guarded tensor is checked bit-identical to the base and the proof goes into \
        OUTPUT/report.json. Outputs: OUTPUT/model (diffusers folder), OUTPUT/delta.safetensors (trainable tensors only).

        With --lora, only low-rank adapters on the chosen layers train (never on a guarded tensor); they are written \
        as a PEFT folder, OUTPUT/adapter, and OUTPUT/model holds them merged.

        Example: permafrost finetune --base runs/base --guard guard.json --publisher-key publisher.pub --digits 6,7 --output runs/user
        """
    )
    @Option(help: "Base UNet2DModel folder.") var base: String
    @Option(help: "Signed guard manifest to enforce.") var `guard`: String?
    @Option(help: "Trusted publisher public key (pins the guard's signer).") var publisherKey: String?
    @Option(help: "Extra FreezePlan JSON of your own (adds to the guard).") var plan: String?
    @Option(help: "MNIST digits to learn (slots = digits).") var digits: String?
    @Option(help: "Fashion-MNIST classes to learn, from 1,7,8 (slots 10–12).") var fashion: String?
    @Option(help: "Teach the chosen data under other slots, e.g. 6:13,7:14.") var relabel: String?
    @Option(help: "Use only the odd-indexed (user) half of the images (the evaluation protocols do).") var userHalf = true
    @Option(help: "Train LoRA adapters on these layers only (comma-separated globs over module names, e.g. '*.to_q,*.to_v').") var lora: String?
    @Option(help: "LoRA rank.") var rank = 8
    @Option(help: "LoRA alpha (default: the rank, so the update is B·A unscaled).") var loraAlpha: Float?
    @Option(help: "Training steps.") var steps: Int = 300
    @Option(help: "Batch size.") var batch: Int = 32
    @Option(help: "Learning rate.") var learningRate: Float = 1e-3
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output folder.") var output: String
    @Flag(help: "No progress output.") var quiet = false
    @OptionGroup var freezing: FreezingOptions
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let manifest = try self.guard.map { path in
            do { return try GuardManifest.load(from: URL(fileURLWithPath: path)) } catch let error as GuardError { throw CLIError("refusing to fine-tune: \(error.description)") }
        }
        let trustedKey = try publisherKey.map { path in
            do { return try GuardKeys.publicKey(from: URL(fileURLWithPath: path)) } catch let error as GuardError { throw CLIError("refusing to fine-tune: \(error.description)") }
        }
        let origin = try GuardedFineTune.Base(directory: URL(fileURLWithPath: base))
        try requireCompatible(origin.model, slots: 1)
        var userPlan = FreezePlan()
        if let plan {
            do { userPlan = try JSONDecoder().decode(FreezePlan.self, from: Data(contentsOf: URL(fileURLWithPath: plan))) } catch {
                throw CLIError("--plan: '\(plan)' is not a FreezePlan JSON file: \(error)")
            }
        }
        var data = try dataOptions.shipped().load(split: "train", digits: Set(try digits.map { try parseRanges($0, name: "--digits") } ?? []),
                                        fashion: Set(try fashion.map { try parseRanges($0, name: "--fashion") } ?? []))
        guard data.count > 0 else { throw ValidationError("choose data with --digits and/or --fashion") }
        if userHalf { data = GuardProtocol.half(data, publisher: false) }
        if let relabel { data = data.relabeled(try LabeledImages.labelMapping(relabel)) }
        var settings = FineTuneSettings(steps: steps, batchSize: batch, learningRate: learningRate, seed: seed,
                                        scheduler: try freezing.slimFitBudget().map { .slimFit(budget: $0) } ?? .none,
                                        activationCompression: freezing.activationCompression)
        settings.lora = lora.map { LoRASettings(targets: $0.split(separator: ",").map(String.init), configuration: LoRAConfiguration(rank: rank, alpha: loraAlpha ?? Float(rank))) }
        let out = URL(fileURLWithPath: output)
        let bar = ProgressBar(total: steps, label: "finetune")
        bar.quiet = quiet
        let fineTune = try GuardedFineTune(base: origin, guard: manifest, trustedPublisherKey: trustedKey, userPlan: userPlan, data: data, settings: settings)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        var report = try fineTune.run(delta: lora == nil ? out.appendingPathComponent("delta.safetensors") : nil, progress: { p in
            bar.update(p.step, detail: String(format: "loss %.4f", p.averageLoss))
        })
        try fineTune.finishAdapters(writingTo: out.appendingPathComponent("adapter"), baseModel: base)
        try fineTune.model.save(directory: out.appendingPathComponent("model"))
        (report.base, report.guardFile) = (base, self.guard)
        try report.write(to: out.appendingPathComponent("report.json"))
        if !quiet { print(report) }
    }
}
