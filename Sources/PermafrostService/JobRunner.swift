import Foundation
import PermafrostDiffusion
import PermafrostFreeze
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor
import Synchronization

/// Where a job keeps its files: `jobs/<id>/checkpoint/` while it trains, then `delta.safetensors`
/// and `report.json`.
public struct JobFiles: Sendable {
    public let directory: URL
    public init(root: URL, id: String) { directory = root.appendingPathComponent("jobs").appendingPathComponent(id) }
    public var checkpoint: URL { directory.appendingPathComponent("checkpoint") }
    public var delta: URL { directory.appendingPathComponent("delta.safetensors") }
    public var report: URL { directory.appendingPathComponent("report.json") }
    public var hasCheckpoint: Bool { FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent("state.safetensors").path) }
}

/// The proof a user downloads with the delta: every guarded tensor of the fine-tuned model, its
/// SHA-256, and the guard's (the base's) digest for it.
public struct VerificationReport: Codable, Sendable {
    public struct GuardedTensor: Codable, Sendable {
        public var name: String
        public var expectedSHA256: String
        public var actualSHA256: String
        enum CodingKeys: String, CodingKey { case name, expectedSHA256 = "expected_sha256", actualSHA256 = "actual_sha256" }
    }
    public var job: String
    public var baseSHA256: String
    public var guardPublicKey: String?
    public var guardSignature: String?
    public var guardedTensorsBitIdentical: Bool
    public var guardedTensors: [GuardedTensor]
    public var deltaTensors: [String]
    public var deltaSHA256: String
    public var steps: Int
    public var finalLoss: Double?
    public var secondsPerStep: Double
    public var peakTrainingBytes: Int?
    public var resumedFromStep: Int?

    enum CodingKeys: String, CodingKey {
        case job, steps
        case baseSHA256 = "base_sha256", guardPublicKey = "guard_public_key", guardSignature = "guard_signature"
        case guardedTensorsBitIdentical = "guarded_tensors_bit_identical", guardedTensors = "guarded_tensors"
        case deltaTensors = "delta_tensors", deltaSHA256 = "delta_sha256", finalLoss = "final_loss"
        case secondsPerStep = "seconds_per_step", peakTrainingBytes = "peak_training_bytes", resumedFromStep = "resumed_from_step"
    }
}

/// Why a job stopped early.
public enum JobStop: Error, Sendable, CustomStringConvertible {
    case cancelled(step: Int)
    case failed(String)
    public var description: String {
        switch self {
        case let .cancelled(step): return "cancelled by the user at step \(step)"
        case let .failed(reason): return reason
        }
    }
}

/// Runs one job to its end, synchronously (on a thread of its own): resume or start, train with the
/// guard enforced, checkpoint, write the delta and the verification report atomically.
public struct JobRunner: Sendable {
    public let published: PublishedModel
    public let dataRoot: URL
    public let checkpointEvery: Int

    public struct Progress: Sendable {
        public var step: Int
        public var totalSteps: Int
        public var loss: Double
        public var stepsPerSecond: Double
    }

    public func run(job: JobRecord, parameters: JobParameters, isCancelled: () -> Bool, progress: (Progress) -> Void) throws -> VerificationReport {
        let files = JobFiles(root: dataRoot, id: job.id)
        try FileManager.default.createDirectory(at: files.directory, withIntermediateDirectories: true)
        let data: LabeledImages
        do {
            let folder = dataRoot.appendingPathComponent("uploads").appendingPathComponent(parameters.uploadID)
            data = try LabeledImages(images: folder.appendingPathComponent("images.idx"), labels: folder.appendingPathComponent("labels.idx"))
        } catch {
            throw JobStop.failed("the training set \(parameters.uploadID) cannot be read: \(error)")
        }
        let userPlan = FreezePlan(frozen: Set(parameters.freeze))
        let trainer: DiffusionTrainer
        var resumedFrom: Int?
        if files.hasCheckpoint {
            do {
                trainer = try DiffusionTrainer.resume(from: files.checkpoint, data: data)
            } catch {
                throw JobStop.failed("the job's checkpoint cannot be resumed: \(error)")
            }
            resumedFrom = trainer.step
            let changed = try published.manifest.changedTensors(in: trainer.model)
            guard changed.isEmpty else { throw JobStop.failed("the checkpoint's guarded tensors differ from the base: \(changed.prefix(3))") }
            // A checkpoint's model loads unfrozen; the fresh base comes with the guard applied.
            try trainer.model.apply(published.manifest.plan)
        } else {
            var options = DiffusionTrainingOptions.fineTuning(steps: parameters.steps, batchSize: parameters.batchSize,
                                                              learningRate: Float(parameters.learningRate), seed: parameters.seed)
            options.checkpointEvery = checkpointEvery
            trainer = DiffusionTrainer(model: try published.loadBase(), data: data, options: options)
        }
        let model = trainer.model
        try model.apply(userPlan)
        if parameters.scheduler == "slimfit" {
            trainer.scheduler = UnionFreezeScheduler(SlimFitScheduler(budget: parameters.freezeBudget), plus: userPlan)
        }
        let start = Date(), firstStep = trainer.step
        var lastLoss: Double?, peak: Int?
        while trainer.step < trainer.options.steps {
            if isCancelled() { throw JobStop.cancelled(step: trainer.step) }
            let result = try trainer.trainStep()
            guard result.loss.isFinite else { throw JobStop.failed("the loss became \(result.loss) at step \(trainer.step); lower the learning rate") }
            lastLoss = Double(result.loss)
            peak = max(peak ?? 0, result.memory.peakBytes)
            let elapsed = Date().timeIntervalSince(start)
            progress(Progress(step: trainer.step, totalSteps: trainer.options.steps, loss: Double(result.loss),
                              stepsPerSecond: Double(trainer.step - firstStep) / max(elapsed, 1e-9)))
            if trainer.step % checkpointEvery == 0, trainer.step < trainer.options.steps {
                try trainer.saveCheckpoint(to: files.checkpoint)
            }
        }
        // The delta holds every tensor the user could train: a scheduler's last step may have frozen
        // some for a moment, so restore the job's own frozen set (guard + user plan) first.
        try model.replaceFreezing(with: userPlan)
        let changed = try published.manifest.changedTensors(in: model)
        guard changed.isEmpty else { throw JobStop.failed("guard violated: \(changed.prefix(5)) changed (this is a bug; nothing was published)") }
        try DeltaCheckpoint.save(model, baseDigest: published.baseSHA256, to: files.delta, metadata: ["permafrost.job": job.id])
        let digests = Dictionary(model.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        let guarded = published.manifest.frozen.sorted().map { name in
            VerificationReport.GuardedTensor(name: name, expectedSHA256: published.manifest.frozenSHA256[name] ?? "",
                                             actualSHA256: digests[name].map { tensorDigest($0.value) } ?? "")
        }
        let report = VerificationReport(
            job: job.id, baseSHA256: published.baseSHA256, guardPublicKey: published.manifest.publicKey, guardSignature: published.manifest.signature,
            guardedTensorsBitIdentical: guarded.allSatisfy { $0.expectedSHA256 == $0.actualSHA256 }, guardedTensors: guarded,
            deltaTensors: model.trainableParameters().map(\.name), deltaSHA256: try sha256Hex(of: files.delta),
            steps: trainer.options.steps, finalLoss: lastLoss, secondsPerStep: Date().timeIntervalSince(start) / Double(max(trainer.step - firstStep, 1)),
            peakTrainingBytes: peak, resumedFromStep: resumedFrom)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(try encoder.encode(report), to: files.report)
        try? FileManager.default.removeItem(at: files.checkpoint)
        return report
    }
}
