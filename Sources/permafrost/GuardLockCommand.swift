import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

extension GuardCommand {
    struct Lock: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lock a guard's frozen tensors against relearning; publish the locked base with its signed guard.",
            discussion: """
            Meta-learns the values of the guard's frozen tensors; no other tensor changes. Each step simulates a user attack \
            on the other tensors (Adam, AdamW or SGD-momentum, 3–5 steps at a log-uniform rate, restricted data under its own, \
            unused or permitted slots) and raises the restricted loss after it up to --cap, while a permitted attack must still \
            succeed and the base keeps its own digits. Writes OUTPUT/base (the locked diffusers folder) and OUTPUT/guard.json \
            (the same tensors bound to the locked values; signed with --key). Checkpoints in OUTPUT/lock-checkpoint (--resume).

            Example: permafrost guard lock --base Models/base-0-5 --guard guard.json --key publisher.key --output runs/locked
            """)
        @Option(help: "Base UNet folder (the one the guard was learnt for).") var base: String
        @Option(help: "Guard whose frozen tensors to lock.") var `guard`: String
        @Option(help: "Protocol defining restricted and permitted data: near or far.") var `protocol`: String = "far"
        @Option(help: "Lock steps.") var steps: Int = 200
        @Option(help: "Adam's rate on the frozen tensors.") var learningRate: Float = 5e-4
        @Option(help: "Cap τ up to which the restricted loss after an attack is raised.") var cap: Float = 1
        @Option(help: "Weight α of the permitted loss after a permitted attack.") var permittedWeight: Float = 2
        @Option(help: "Weight β of the retain loss on the base's own digits.") var retainWeight: Float = 10
        @Flag(help: "Retain by the denoising loss instead of distilling the base's own noise predictions.") var denoisingRetain = false
        @Option(help: "Batch size of each loss.") var batch: Int = 16
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Private key to sign the locked guard.") var key: String?
        @Option(help: "Output folder.") var output: String
        @Flag(help: "Continue from OUTPUT/lock-checkpoint.") var resume = false
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let model = try UNet2DModel(directory: URL(fileURLWithPath: base))
            try requireCompatible(model)
            let manifest = try GuardManifest.load(from: URL(fileURLWithPath: self.guard))
            try manifest.verifyBase(UNet2DModel.weightsURL(base))
            let (restricted, permitted, retain) = try GuardProtocol.option(`protocol`).lockSets(try dataOptions.shipped())
            var settings = LockSettings()
            settings.steps = steps; settings.learningRate = learningRate; settings.suppressionCap = cap; settings.permittedWeight = permittedWeight
            settings.retainWeight = retainWeight; settings.labelVariants = restricted.count; settings.seed = seed
            let lock = try GuardLock(model: model, frozen: Set(manifest.frozen), settings: settings)
            let out = URL(fileURLWithPath: output), checkpoint = out.appendingPathComponent("lock-checkpoint")
            if resume { try lock.resume(from: checkpoint) }
            let bar = ProgressBar(total: steps, label: "lock", initial: lock.step)
            let teacher = denoisingRetain ? nil : try UNet2DModel(directory: URL(fileURLWithPath: base))
            let task = LockTask.diffusion(model: model, restricted: restricted, permitted: permitted, retain: retain, batchSize: batch, seed: seed, teacher: teacher)
            try lock.lock(task, checkpoint: checkpoint) { p in
                bar.update(p.step, detail: String(format: "L_r %.3f L_p %.3f L_retain %.3f", p.restrictedLoss, p.permittedLoss, p.retainLoss))
            }
            let fields = manifest.settings.merging(settings.dictionary) { $1 }.merging(["protocol": `protocol`, "lock_retain": teacher == nil ? "denoising" : "distillation"]) { $1 }
            let locked = try GuardManifest.publishLocked(model, frozen: Set(manifest.frozen), to: out.appendingPathComponent("base"), settings: fields,
                                                         signingKey: try key.map { try GuardKeys.privateKey(from: URL(fileURLWithPath: $0)) })
            try locked.write(to: out.appendingPathComponent("guard.json"))
            print("locked \(locked.frozen.count) tensors → \(out.path)/base, \(out.path)/guard.json\(key == nil ? " (unsigned: `permafrost guard sign`)" : ", signed")")
        }
    }
}
