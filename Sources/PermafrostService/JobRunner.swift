import Foundation
import PermafrostDiffusion
import PermafrostGuard
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
    /// A LoRA job's result: a PEFT adapter folder.
    public var adapter: URL { directory.appendingPathComponent("adapter") }
    public var hasCheckpoint: Bool { FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent("state.safetensors").path) }
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

    /// Trains `job` through ``GuardedFineTune`` (resuming from its checkpoint when one exists) and
    /// writes its delta and report; the report is also returned.
    public func run(job: JobRecord, parameters: JobParameters, isCancelled: () -> Bool, progress: (Progress) -> Void) throws -> FineTuneReport {
        let files = JobFiles(root: dataRoot, id: job.id)
        try FileManager.default.createDirectory(at: files.directory, withIntermediateDirectories: true)
        let data: LabeledImages
        do {
            let folder = dataRoot.appendingPathComponent("uploads").appendingPathComponent(parameters.uploadID)
            data = try LabeledImages(images: folder.appendingPathComponent("images.idx"), labels: folder.appendingPathComponent("labels.idx"))
        } catch {
            throw JobStop.failed("the training set \(parameters.uploadID) cannot be read: \(error)")
        }
        // A LoRA job keeps no checkpoint: after a crash it starts again from the base.
        var settings = FineTuneSettings(steps: parameters.steps, batchSize: parameters.batchSize, learningRate: Float(parameters.learningRate),
                                        seed: parameters.seed, scheduler: parameters.scheduler == "slimfit" ? .slimFit(budget: parameters.freezeBudget) : .none,
                                        checkpointEvery: parameters.lora == nil ? checkpointEvery : nil)
        settings.lora = parameters.lora.map { LoRASettings(targets: $0.targets, configuration: LoRAConfiguration(rank: $0.rank, alpha: Float($0.alpha))) }
        do {
            let fineTune = try GuardedFineTune(base: GuardedFineTune.Base(model: try published.loadBase(), sha256: published.baseSHA256),
                                               guard: published.manifest, userPlan: FreezePlan(frozen: Set(parameters.freeze)),
                                               data: data, settings: settings, resumingFrom: files.checkpoint)
            var report = try fineTune.run(checkpoint: files.checkpoint, delta: parameters.lora == nil ? files.delta : nil, deltaMetadata: ["permafrost.job": job.id],
                                          isCancelled: isCancelled) { p in
                progress(Progress(step: p.step, totalSteps: p.totalSteps, loss: Double(p.loss), stepsPerSecond: p.stepsPerSecond))
            }
            report.job = job.id
            if let digests = try fineTune.finishAdapters(writingTo: files.adapter, baseModel: published.baseSHA256) {
                (report.deltaSHA256, report.adapterConfigSHA256, report.loraTargets) = (digests.weights, digests.configuration, parameters.lora?.targets)
            }
            try report.write(to: files.report)
            try? FileManager.default.removeItem(at: files.checkpoint)
            return report
        } catch let error as GuardedFineTuneError {
            if case let .cancelled(step) = error { throw JobStop.cancelled(step: step) }
            throw JobStop.failed(error.description)
        }
    }
}
