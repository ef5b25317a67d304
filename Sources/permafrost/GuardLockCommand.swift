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
            on the other tensors (Adam, AdamW or SGD-momentum at a log-uniform rate, restricted data under its own, unused or \
            permitted slots; with --attackers, persistent attackers that keep training up to a horizon drawn from \
            --attack-horizon) and raises the restricted loss after it up to --cap, while a permitted attack must still succeed \
            and the base keeps its own digits (--retain-steps retain-only steps after each step). Writes OUTPUT/base (the \
            locked diffusers folder), OUTPUT/guard.json (signed with --key) and OUTPUT/lock-log.jsonl; checkpoints in \
            OUTPUT/lock-checkpoint (--resume).

            Example: permafrost guard lock --base Models/base-0-5 --guard guard.json --key publisher.key --output runs/locked
            """)
        @Option(help: "Base UNet folder (the one the guard was learnt for).") var base: String
        @Option(help: "Guard whose frozen tensors to lock (none: lock every tensor, enforce nothing).") var `guard`: String?
        @Option(help: "Protocol defining restricted and permitted data: near or far.") var `protocol`: String = "far"
        @Option(help: "Lock steps.") var steps: Int = 200
        @Option(help: "Adam's rate on the frozen tensors.") var learningRate: Float = 5e-4
        @Option(help: "Cap τ up to which the restricted loss after an attack is raised.") var cap: Float = 1
        @Option(help: "Weight α of the permitted loss after a permitted attack.") var permittedWeight: Float = 2
        @Option(help: "Weight β of the retain loss on the base's own digits.") var retainWeight: Float = 10
        @Option(help: "Retain-only steps on the frozen tensors after each lock step.") var retainSteps: Int = 0
        @Option(help: "λ of a pull of the frozen tensors towards the base's values after each step (0: none).") var proximal: Float = 0
        @Option(help: "Steps of each simulated attack, drawn uniformly from this range.") var attackSteps: String = "3-5"
        @Option(help: "The simulated attacks' learning rates (Adam; SGD-momentum ×10), drawn log-uniformly: LOW-HIGH.") var attackRates: String = "3e-4-3e-3"
        @Option(help: "Persistent attackers (0: every simulated attack starts from the published values).") var attackers: Int = 0
        @Option(help: "Steps a persistent attacker trains in all, drawn log-uniformly from this range.") var attackHorizon: String = "5-300"
        @Flag(help: "Retain by the denoising loss instead of distilling the base's own noise predictions.") var denoisingRetain = false
        @Option(help: "Weigh the distillation by the implied clean image's error, capped at this (0: all timesteps alike).") var retainCleanImageCap: Float = 0
        @Option(help: "Batch size of each loss.") var batch: Int = 16
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Private key to sign the locked guard.") var key: String?
        @Option(help: "Output folder.") var output: String
        @Flag(help: "Continue from OUTPUT/lock-checkpoint.") var resume = false
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            var settings = LockSettings(), horizon = try parsePositive(attackHorizon, name: "--attack-horizon")
            let inner = try parsePositive(attackSteps, name: "--attack-steps")
            settings.attackSteps = inner.min()!...inner.max()!
            settings.attackLearningRate = try parseRateRange(attackRates)
            settings.steps = steps; settings.learningRate = learningRate; settings.suppressionCap = cap; settings.permittedWeight = permittedWeight; settings.seed = seed
            settings.retainWeight = retainWeight; settings.retainSteps = retainSteps; settings.proximalWeight = proximal > 0 ? proximal : nil; settings.attackers = attackers; settings.attackHorizon = horizon.min()!...horizon.max()!
            var job = DiffusionLockJob(base: URL(fileURLWithPath: base), manifest: try self.guard.map { try GuardManifest.load(from: URL(fileURLWithPath: $0)) },
                                       guardProtocol: try GuardProtocol.option(`protocol`), settings: settings, output: URL(fileURLWithPath: output))
            job.batchSize = batch; job.distillRetain = !denoisingRetain; job.retainWeighting = retainCleanImageCap > 0 ? .cleanImage(cap: retainCleanImageCap) : .uniform
            var bar: ProgressBar?
            let locked = try job.run(data: try dataOptions.shipped(), resume: resume, signingKey: try key.map { try GuardKeys.privateKey(from: URL(fileURLWithPath: $0)) },
                                     started: { bar = ProgressBar(total: steps, label: "lock", initial: $0) }) { p in
                bar?.update(p.step, detail: String(format: "L_r %.3f (depth %d) L_p %.3f L_retain %.4f", p.restrictedLoss, p.attackDepth, p.permittedLoss, p.retainLoss))
            }
            guard let locked else { return print("locked every tensor, nothing enforced → \(output)/base") }
            print("locked \(locked.frozen.count) tensors → \(output)/base, \(output)/guard.json\(key == nil ? " (unsigned: `permafrost guard sign`)" : ", signed")")
        }
    }
}

/// "3e-4-3e-3" → 3e-4...3e-3 (the separator is the dash that follows a digit, so exponents keep theirs).
func parseRateRange(_ text: String) throws -> ClosedRange<Float> {
    let characters = Array(text)
    let split = characters.indices.dropFirst().first { characters[$0] == "-" && characters[$0 - 1].isNumber }
    let parts = split.map { [String(characters[..<$0]), String(characters[($0 + 1)...])] } ?? [text, text]
    guard let low = Float(parts[0]), let high = Float(parts[1]), low > 0, low <= high, high.isFinite else {
        throw ValidationError("--attack-rates: LOW-HIGH with 0 < LOW ≤ HIGH (e.g. 3e-4-3e-3), got '\(text)'")
    }
    return low...high
}
