import ArgumentParser
import Foundation
import PermafrostDiffusion
import PermafrostFreeze
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// What a fine-tuning run did, written as `report.json` beside its outputs.
struct FinetuneReport: Codable {
    var base: String
    var baseSHA256: String
    var guardFile: String?
    var guardPublicKey: String?
    var guardedTensors: Int
    /// Every guarded tensor's SHA-256 after training equals the manifest's (and so the base's).
    var guardedTensorsBitIdentical: Bool?
    var changedGuardedTensors: [String]
    var frozenTensors: Int
    var trainableTensors: Int
    var trainableParameters: Int
    var steps: Int
    var finalLoss: Float
    var secondsPerStep: Double
    var memory: MemoryReport?
    /// Largest per-step tensor peak after the first 10 steps (SlimFit trains everything at first).
    var steadyPeakTensorBytes: Int?
    /// Median seconds per step after the first 10.
    var medianSecondsPerStep: Double?
    /// The process's peak resident set size, MiB.
    var peakRSSMegabytes: Double?
    var scheduler: String?
    var activationCompression: Bool?
    /// Inputs kept for weight gradients were 8-bit too.
    var weightInputCompression: Bool?
    var classSlots: [Int]
}

/// `permafrost finetune`: the user's fine-tuning, with a publisher's guard enforced.
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a base UNet on chosen digits / Fashion classes, enforcing a publisher's signed guard.",
        discussion: """
        With --guard, the guard's signature (against --publisher-key when given) and its base digest must verify, \
        or nothing runs. Guarded tensors get no gradient and no optimizer state; a user's --plan may freeze more, \
        never less. At the end every guarded tensor is checked bit-identical to the base and the proof goes into \
        OUTPUT/report.json. Outputs: OUTPUT/model (diffusers folder), OUTPUT/delta.safetensors (trainable tensors only).

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
    @Option(help: "Dynamic freezing: none or slimfit.") var scheduler: String = "none"
    @Option(help: "SlimFit: fraction of candidate tensors frozen at each step.") var freezeBudget: Double = 0.8
    @Flag(help: "Keep static activations (activation functions', frozen norms') in 8 bits, as SlimFit does.") var compressActivations = false
    @Flag(help: "Also keep the inputs trainable convolutions and matmuls save for their weight gradients in 8 bits (implies --compress-activations).") var compressWeightInputs = false
    @Option(help: "Training steps.") var steps: Int = 300
    @Option(help: "Batch size.") var batch: Int = 32
    @Option(help: "Learning rate.") var learningRate: Float = 1e-3
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output folder.") var output: String
    @Flag(help: "No progress output.") var quiet = false
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let baseURL = URL(fileURLWithPath: base)
        let baseWeights = weightsURL(base)
        let baseDigest = try sha256Hex(of: baseWeights)
        var manifest: GuardManifest?
        if let guardPath = self.guard {
            do {
                let m = try GuardManifest.load(from: URL(fileURLWithPath: guardPath))
                try m.verifySignature(trustedKey: try publisherKey.map { try GuardKeys.publicKey(from: URL(fileURLWithPath: $0)) })
                try m.verifyBase(baseWeights)
                manifest = m
            } catch let error as GuardError {
                throw CLIError("refusing to fine-tune: \(error.description)")
            }
        }
        let model = try UNet2DModel(directory: baseURL)
        try requireCompatible(model, slots: 1)
        var userFrozen = FreezePlan()
        do {
            if let manifest { try model.apply(manifest.plan) }
            if let plan {
                let userPlan = try JSONDecoder().decode(FreezePlan.self, from: Data(contentsOf: URL(fileURLWithPath: plan)))
                userFrozen = FreezePlan(frozen: userPlan.frozen, frozenRows: userPlan.frozenRows.mapValues { $0.map(\.range) })
                try model.apply(userFrozen)
            }
        } catch let error as FreezeError {
            throw CLIError(error.description)
        }
        var data = try dataOptions.load(split: "train", digits: Set(try digits.map { try parseRanges($0, name: "--digits") } ?? []),
                                        fashion: Set(try fashion.map { try parseRanges($0, name: "--fashion") } ?? []))
        guard data.count > 0 else { throw ValidationError("choose data with --digits and/or --fashion") }
        if userHalf { data = GuardProtocol.half(data, publisher: false) }
        if let relabel {
            var map: [Int: Int] = [:]
            for pair in relabel.split(separator: ",") {
                let parts = pair.split(separator: ":").compactMap { Int($0) }
                guard parts.count == 2 else { throw ValidationError("--relabel: use FROM:TO pairs, got '\(pair)'") }
                map[parts[0]] = parts[1]
            }
            data = data.relabeled(map)
        }
        if let limit = model.config.numClassEmbeds, let bad = data.labels.first(where: { $0 >= limit }) {
            throw ValidationError("class slot \(bad) is outside the model's \(limit) slots")
        }
        let options = DiffusionTrainingOptions.fineTuning(steps: steps, batchSize: batch, learningRate: learningRate, seed: seed)
        let trainer = DiffusionTrainer(model: model, data: data, options: options)
        trainer.activationCompression = activationCompressionMode(compressActivations, weightInputs: compressWeightInputs)
        switch scheduler {
        case "none": break
        case "slimfit":
            guard freezeBudget >= 0, freezeBudget < 1 else { throw ValidationError("--freeze-budget must be in [0, 1)") }
            trainer.scheduler = UnionFreezeScheduler(SlimFitScheduler(budget: freezeBudget), plus: userFrozen)
        default: throw ValidationError("--scheduler must be none or slimfit, got '\(scheduler)'")
        }
        MemoryStatistics.returnFreeMemoryToSystem()
        let bar = ProgressBar(total: steps, label: "finetune")
        bar.quiet = quiet
        var lastLoss: Float = .nan, memory: MemoryReport?, steadyPeak = 0, stepTimes: [Double] = []
        let start = Date()
        var stepStart = Date()
        try trainer.train(checkpointDirectory: nil) { p in
            lastLoss = p.averageLoss
            memory = p.memory
            if p.step > 10 { steadyPeak = max(steadyPeak, p.memory.peakBytes); stepTimes.append(Date().timeIntervalSince(stepStart)) }
            stepStart = Date()
            bar.update(p.step, detail: String(format: "loss %.4f", p.averageLoss))
        }
        let seconds = Date().timeIntervalSince(start)
        // The delta must hold every tensor the user could train: SlimFit's last step may have frozen
        // some for a moment, so go back to the run's own frozen set (guard + user plan) first.
        try model.replaceFreezing(with: userFrozen)
        let out = URL(fileURLWithPath: output)
        try model.save(directory: out.appendingPathComponent("model"))
        try DeltaCheckpoint.save(model, baseDigest: baseDigest, to: out.appendingPathComponent("delta.safetensors"))
        let changed = try manifest.map { try $0.changedTensors(in: model) } ?? []
        let report = FinetuneReport(
            base: base, baseSHA256: baseDigest, guardFile: self.guard, guardPublicKey: manifest?.publicKey,
            guardedTensors: manifest?.frozen.count ?? 0, guardedTensorsBitIdentical: manifest.map { _ in changed.isEmpty },
            changedGuardedTensors: changed, frozenTensors: model.frozenParameters().count, trainableTensors: model.trainableParameters().count,
            trainableParameters: model.trainableParameters().reduce(0) { $0 + $1.parameter.value.count },
            steps: steps, finalLoss: lastLoss, secondsPerStep: seconds / Double(max(steps, 1)), memory: memory,
            steadyPeakTensorBytes: steadyPeak, medianSecondsPerStep: stepTimes.isEmpty ? nil : median(stepTimes),
            peakRSSMegabytes: peakResidentMegabytes(), scheduler: scheduler, activationCompression: compressActivations || compressWeightInputs,
            weightInputCompression: compressWeightInputs,
            classSlots: Set(data.labels).sorted())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(try encoder.encode(report), to: out.appendingPathComponent("report.json"))
        if !quiet {
            print(String(format: "fine-tuned %d steps (%.2f s/step), loss %.4f; %d tensors frozen, %d trainable", steps, report.secondsPerStep, lastLoss,
                         report.frozenTensors, report.trainableTensors))
            if let manifest {
                print(changed.isEmpty ? "guard: all \(manifest.frozen.count) guarded tensors bit-identical to the base (report.json)"
                                      : "guard VIOLATED: \(changed.count) guarded tensors changed")
            }
        }
        guard changed.isEmpty else { throw CLIError("guarded tensors changed: \(changed.prefix(5).joined(separator: ", "))") }
    }
}

/// The activation-compression mode two CLI flags choose.
func activationCompressionMode(_ staticActivations: Bool, weightInputs: Bool) -> ActivationCompression {
    weightInputs ? .int8WithWeightInputs : staticActivations ? .int8 : .none
}
