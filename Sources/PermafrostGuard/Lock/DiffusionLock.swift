import Crypto
import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN

/// Locks a guard on a diffusion base end to end, as `permafrost guard lock` does: the protocol's data,
/// the lock (checkpointed and resumable), a log of every outer step, and the published locked base
/// with its guard.
public struct DiffusionLockJob {
    /// The publisher's base folder (the guard's base).
    public var base: URL
    /// The guard whose frozen tensors are locked; nil locks every tensor with nothing enforced
    /// (``LockSettings/enforced`` false: the `lock-only` baseline, published without a guard).
    public var manifest: GuardManifest?
    public var guardProtocol: GuardProtocol
    public var settings: LockSettings
    public var batchSize = 16
    /// Retain by distilling the base's own noise predictions (else by the denoising loss).
    public var distillRetain = true
    /// How the distillation weighs timesteps.
    public var retainWeighting = RetainWeighting.uniform
    /// Receives `base/` (the locked diffusers folder), `guard.json`, `lock-checkpoint/` and `lock-log.jsonl`.
    public var output: URL

    public init(base: URL, manifest: GuardManifest?, guardProtocol: GuardProtocol, settings: LockSettings, output: URL) {
        self.base = base; self.manifest = manifest; self.guardProtocol = guardProtocol; self.settings = settings; self.output = output
    }

    public var checkpoint: URL { output.appendingPathComponent("lock-checkpoint") }
    public var logURL: URL { output.appendingPathComponent("lock-log.jsonl") }

    /// Runs (or, with `resume`, continues) the lock and publishes the result; `started` learns the
    /// step the lock starts from. Returns the locked guard, signed when `signingKey` is given (nil
    /// without a guard).
    @discardableResult
    public func run(data: ShippedData, resume: Bool, signingKey: Curve25519.Signing.PrivateKey?,
                    started: (Int) -> Void = { _ in }, progress: (LockProgress) -> Void = { _ in }) throws -> GuardManifest? {
        let model = try UNet2DModel(directory: base)
        if let problem = model.config.shippedDataProblem() { throw GuardLockError.incompatibleBase(problem) }
        try manifest?.verifyBase(UNet2DModel.weightsURL(base.path))
        var settings = self.settings
        let (restricted, permitted, retain) = try guardProtocol.lockSets(data)
        settings.labelVariants = restricted.count
        settings.enforced = manifest != nil
        let frozen = manifest.map { Set($0.frozen) } ?? Set(model.namedParameters().map(\.name))
        let lock = try GuardLock(model: model, frozen: frozen, settings: settings)
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        if resume { try lock.resume(from: checkpoint) } else { try? FileManager.default.removeItem(at: logURL) }
        started(lock.step)
        let teacher = distillRetain ? try UNet2DModel(directory: base) : nil
        let task = LockTask.diffusion(model: model, restricted: restricted, permitted: permitted, retain: retain,
                                      batchSize: batchSize, seed: settings.seed, teacher: teacher, retainWeighting: retainWeighting)
        let log = try LockLog(url: logURL)
        try lock.lock(task, checkpoint: checkpoint) { p in
            log.append(p)
            progress(p)
        }
        guard let manifest else {
            try model.save(directory: output.appendingPathComponent("base"), metadata: ["permafrost.locked": "true", "permafrost.enforced": "false"])
            return nil
        }
        let fields = manifest.settings.merging(settings.dictionary) { $1 }
            .merging(["protocol": guardProtocol.name, "lock_retain": distillRetain ? "distillation" : "denoising",
                      "lock_retain_weighting": "\(retainWeighting)"]) { $1 }
        let locked = try GuardManifest.publishLocked(model, frozen: frozen, to: output.appendingPathComponent("base"),
                                                     settings: fields, signingKey: signingKey)
        try locked.write(to: output.appendingPathComponent("guard.json"))
        return locked
    }
}

/// One JSON line per outer step of a lock (the losses the lock trades), appended as the lock runs.
final class LockLog {
    private let handle: FileHandle

    init(url: URL) throws {
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }

    deinit { try? handle.close() }

    func append(_ p: LockProgress) {
        let fields: [String: Any] = ["step": p.step, "attack": p.attack.description, "attack_depth": p.attackDepth,
                                     "restricted_loss": p.restrictedLoss, "permitted_loss": p.permittedLoss, "retain_loss": p.retainLoss]
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        handle.write(data + Data("\n".utf8))
    }
}
