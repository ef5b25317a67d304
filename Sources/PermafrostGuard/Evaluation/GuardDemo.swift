import Foundation
import PermafrostIO
import PermafrostModels

/// The whole guard story at a small scale (`permafrost demo`), in three steps: a mask (learn, sign and
/// verify a guard for the far protocol), a lock (the tensors `lockSelection` picks at the same ratio —
/// attribution by default, the selection that measured best for a lock — their values meta-learnt
/// against relearning, signed), and the users: the `standard` attack (restricted and permitted data)
/// and a legitimate user's run (permitted data alone) against full fine-tuning, the mask-only guard
/// and the locked guard, scored by the classifier with a "none of these" class.
/// The user's own guarded fine-tune (signed guard, pinned key) proves every locked tensor unchanged;
/// report.json, report.md and report.html land in `output`.
public struct GuardDemo {
    public var base: URL
    public var classifier: URL
    public var output: URL
    public var data: ShippedData
    public var ratio: Double
    public var userSteps: Int
    public var guardSteps: Int
    public var lockSteps: Int
    public var perClass: Int
    /// Batch size of the guard learner, the lock and every user run.
    public var batchSize = 16
    /// Which tensors the lock takes (``GuardSelection``); the locked method is named `<selection>-lock`
    /// (`guard-lock` for the learnt mask).
    public var lockSelection = GuardSelection.attribution
    public var lockedMethod: String { lockSelection == .learnt ? "guard-lock" : "\(lockSelection.rawValue)-lock" }

    public init(base: URL, classifier: URL, output: URL, data: ShippedData, ratio: Double, userSteps: Int, guardSteps: Int, lockSteps: Int, perClass: Int) {
        self.base = base; self.classifier = classifier; self.output = output; self.data = data
        self.ratio = ratio; self.userSteps = userSteps; self.guardSteps = guardSteps; self.lockSteps = lockSteps; self.perClass = perClass
    }

    /// Runs every step, logging each, and writes the outputs; returns the attack report.
    public func run(command: String, log: @escaping (String) -> Void, guardProgress: (GuardProgress) -> Void,
                    lockStarted: (Int) -> Void = { _ in }, lockProgress: (LockProgress) -> Void) throws -> AttackReport {
        guard let far = GuardProtocol.named("far") else { preconditionFailure("the far protocol is built in") }
        let baseModel = try UNet2DModel(directory: base)
        let weights = base.appendingPathComponent(UNet2DModel.weightsFileName)
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let privateKeyURL = output.appendingPathComponent("publisher.key"), publicKeyURL = output.appendingPathComponent("publisher.pub")
        _ = try GuardKeys.generate(privateKeyURL: privateKeyURL, publicKeyURL: publicKeyURL)
        let key = try GuardKeys.privateKey(from: privateKeyURL), trustedKey = try GuardKeys.publicKey(from: publicKeyURL)

        log("1/5 publisher, mask: a guard for the far protocol (\(Int(ratio * 100))% of parameters), signed and verified")
        var settings = GuardSettings()
        settings.freezeRatio = Float(ratio); settings.weightByParameters = true; settings.steps = guardSteps
        let (restricted, permitted) = try far.learningSets(data)
        let mask = GuardLearner.learnDiffusionGuard(model: baseModel, restricted: restricted, permitted: permitted, settings: settings, batchSize: batchSize,
                                                    progress: guardProgress)
        let sizes = Dictionary(uniqueKeysWithValues: baseModel.namedParameters().map { ($0.name, $0.parameter.value.count) })
        var guardManifest = try GuardManifest(model: baseModel, frozen: mask.frozen(ratio: ratio, sizes: sizes), baseSHA256: try sha256Hex(of: weights),
                                              settings: settings.dictionary.merging(["protocol": "far"]) { $1 })
        try guardManifest.sign(with: key)
        try guardManifest.verifySignature(trustedKey: trustedKey)
        try guardManifest.verifyBase(weights)
        try guardManifest.write(to: output.appendingPathComponent("guard.json"))
        log(String(format: "  guard: %d tensors (%.0f%% of parameters) → guard.json", guardManifest.frozen.count, guardManifest.freezeRatioParameters * 100))

        log("2/5 publisher, lock: the \(lockSelection.rawValue) selection's tensors at the same ratio, their values meta-learnt against relearning (\(lockSteps) steps)")
        var lockManifest = guardManifest
        if lockSelection != .learnt {
            settings.steps = 150  // attribution's relearning fine-tune: the standard attack's length
            let ranking = try lockSelection.diffusionMask(model: baseModel, copy: { try UNet2DModel(directory: base) }, restricted: restricted,
                                                          permitted: permitted, learner: settings, batchSize: batchSize)
            lockManifest = try GuardManifest(model: baseModel, frozen: ranking.frozen(ratio: ratio, sizes: sizes), baseSHA256: guardManifest.baseSHA256,
                                             settings: ["protocol": "far", "selection": lockSelection.rawValue])
        }
        var lockSettings = LockSettings()
        lockSettings.steps = lockSteps; lockSettings.permittedWeight = 2; lockSettings.retainWeight = 10
        let lockFolder = output.appendingPathComponent("locked")
        var job = DiffusionLockJob(base: base, manifest: lockManifest, guardProtocol: far, settings: lockSettings, output: lockFolder)
        job.batchSize = batchSize
        guard let locked = try job.run(data: data, resume: false, signingKey: key, started: lockStarted, progress: lockProgress) else { preconditionFailure("a guard was given") }
        try locked.verifySignature(trustedKey: trustedKey)
        log("  locked base → locked/base, its signed guard → locked/guard.json")

        log("3/5 users: the standard attack (\(userSteps) steps) and a legitimate user's run against full fine-tuning, the mask and the lock")
        let suite = AttackSuite(spec: far, data: data, classifier: try ImageClassifier.load(from: classifier))
        suite.perClass = perClass; suite.pictures = output.appendingPathComponent("grids")
        var attack = NamedAttack.standard
        attack.steps = userSteps; attack.batchSize = batchSize
        let targets = [AttackSuite.Target(method: "full", base: base, manifest: nil), AttackSuite.Target(method: "guard", base: base, manifest: guardManifest),
                       AttackSuite.Target(method: lockedMethod, base: lockFolder.appendingPathComponent("base"), manifest: locked)]
        try? FileManager.default.removeItem(at: output.appendingPathComponent("report.json"))
        let report = try suite.runAll(targets: targets, attacks: [attack], seeds: 1, scratch: nil, curve: [], command: command,
                                      digits: Array(GuardProtocol.baseDigits).sorted(), to: output) { log("  " + $0) }

        log("4/5 enforcement: the user's guarded fine-tune (signed locked guard, pinned key) keeps every locked tensor bit-identical")
        let run = try GuardedFineTune(base: try GuardedFineTune.Base(directory: lockFolder.appendingPathComponent("base")), guard: locked,
                                      trustedPublisherKey: trustedKey, data: GuardProtocol.half(try far.restricted(data), publisher: false),
                                      settings: FineTuneSettings(steps: Swift.min(20, userSteps), batchSize: batchSize, seed: 3))
        let check = try run.run()
        log(check.guardedTensorsBitIdentical == true ? "  all \(check.guardedTensors.count) locked tensors bit-identical after fine-tuning"
                                                      : "  VIOLATION: \(check.changedGuardedTensors)")
        log("5/5 report → report.html, report.md, report.json, grids/")
        return report
    }
}

extension GuardDemo {
    /// The base and classifier a demo uses: the given paths, else the shipped ones beside the data
    /// folder; a missing one is an error saying how to make it.
    public static func shippedModels(data: ShippedData, base: String?, classifier: String?) throws -> (base: URL, classifier: URL) {
        let models = data.directory.deletingLastPathComponent().appendingPathComponent("Models")
        let baseURL = URL(fileURLWithPath: base ?? models.appendingPathComponent("base-0-5").path)
        guard FileManager.default.fileExists(atPath: baseURL.appendingPathComponent("config.json").path) else {
            throw DatasetError.notFound("no base model at \(baseURL.path): train one with `permafrost pretrain --digits 0-5 --output \(baseURL.path)` or pass --base")
        }
        let classifierURL = URL(fileURLWithPath: classifier ?? models.appendingPathComponent("classifier-with-none.safetensors").path)
        guard FileManager.default.fileExists(atPath: classifierURL.path) else {
            throw DatasetError.notFound("no classifier at \(classifierURL.path): train one with `permafrost classifier train --fashion 1,7,8 --none-class --output \(classifierURL.path)`")
        }
        return (baseURL, classifierURL)
    }
}
