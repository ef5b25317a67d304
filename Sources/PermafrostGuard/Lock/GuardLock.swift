import Crypto
import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// A user attack a lock simulates: the optimizer, its rate, how many steps, and what it trains on.
public struct SimulatedAttack: Sendable, Equatable, CustomStringConvertible {
    public enum OptimizerKind: String, Codable, Sendable, CaseIterable {
        case adam, adamW = "adamw", sgdMomentum = "sgd-momentum"
    }
    public var steps: Int
    public var optimizer: OptimizerKind
    public var learningRate: Float
    /// Which label assignment of the restricted data the attack uses (restricted slots, unused slots, …).
    public var labelVariant: Int
    /// Restricted data only, or restricted and permitted data mixed (a user's realistic set).
    public var restrictedOnly: Bool

    public var description: String {
        "\(steps) × \(optimizer.rawValue) @ \(String(format: "%.1e", learningRate)), labels \(labelVariant)\(restrictedOnly ? "" : ", mixed")"
    }

    /// A fresh optimizer of this attack's kind and rate (a new attacker has no optimizer state).
    func makeOptimizer() -> Optimizer {
        switch optimizer {
        case .adam: return Adam(learningRate: learningRate)
        case .adamW: return Adam.adamW(learningRate: learningRate)
        case .sgdMomentum: return SGD(learningRate: learningRate, momentum: 0.9)
        }
    }
}

/// Settings of a lock (SOPHON-style first-order meta-learning restricted to the frozen set).
public struct LockSettings: Codable, Sendable, Equatable {
    /// Outer (publisher) steps.
    public var steps = 200
    /// Adam's rate on the frozen tensors' values.
    public var learningRate: Float = 5e-4
    /// Inner (simulated user) steps per attack, drawn uniformly.
    public var attackSteps = 3...5
    /// The simulated user's learning rate, drawn log-uniformly (for Adam; SGD uses ``sgdRateFactor`` times it).
    public var attackLearningRate: ClosedRange<Float> = 3e-4...3e-3
    public var attackOptimizers: [SimulatedAttack.OptimizerKind] = SimulatedAttack.OptimizerKind.allCases
    /// SGD with momentum needs a larger rate than Adam to move the weights as far.
    public var sgdRateFactor: Float = 10
    /// Share of attacks on restricted data alone (the rest mix in permitted data).
    public var restrictedOnlyShare = 0.7
    /// How many label assignments the restricted loss offers (drawn uniformly per attack).
    public var labelVariants = 1
    /// τ: the restricted loss after an attack is raised up to this cap, no further (a bounded suppression).
    public var suppressionCap: Float = 1
    /// α: weight of the permitted loss after a separate permitted attack (permitted stays learnable).
    public var permittedWeight: Float = 1
    /// β: weight of the retain loss at the published weights (the base keeps its quality).
    public var retainWeight: Float = 1
    public var seed: UInt64 = 0
    /// With a checkpoint folder, save the lock's state every this many steps.
    public var checkpointEvery = 25

    public init() {}

    /// The attack of outer step `step`: a pure function of the seed and the step, so a resumed lock
    /// simulates the same attacks.
    public func attack(at step: Int) -> SimulatedAttack {
        var generator = PhiloxGenerator(seed: seed, stream: UInt64(step) &* 4 &+ 3)
        func uniform() -> Double { Double(generator.nextUInt32()) / 4_294_967_296 }
        let steps = attackSteps.lowerBound + Int(generator.nextUInt32() % UInt32(attackSteps.count))
        let optimizer = attackOptimizers[Int(generator.nextUInt32() % UInt32(Swift.max(attackOptimizers.count, 1)))]
        let logRate = log(Double(attackLearningRate.lowerBound)) + uniform() * (log(Double(attackLearningRate.upperBound)) - log(Double(attackLearningRate.lowerBound)))
        let rate = Float(exp(logRate)) * (optimizer == .sgdMomentum ? sgdRateFactor : 1)
        let variant = Int(generator.nextUInt32() % UInt32(Swift.max(labelVariants, 1)))
        return SimulatedAttack(steps: steps, optimizer: optimizer, learningRate: rate, labelVariant: variant, restrictedOnly: uniform() < restrictedOnlyShare)
    }

    /// The settings as text, for a guard manifest's record.
    public var dictionary: [String: String] {
        ["lock_steps": "\(steps)", "lock_lr": "\(learningRate)", "lock_attack_steps": "\(attackSteps.lowerBound)-\(attackSteps.upperBound)",
         "lock_attack_lr": "\(attackLearningRate.lowerBound)-\(attackLearningRate.upperBound)",
         "lock_attack_optimizers": attackOptimizers.map(\.rawValue).joined(separator: ","), "lock_sgd_rate_factor": "\(sgdRateFactor)",
         "lock_restricted_only_share": "\(restrictedOnlyShare)", "lock_label_variants": "\(labelVariants)",
         "lock_suppression_cap": "\(suppressionCap)", "lock_permitted_weight": "\(permittedWeight)", "lock_retain_weight": "\(retainWeight)",
         "lock_seed": "\(seed)"]
    }
}

/// The losses a lock needs, each on a batch chosen by a Philox stream.
public struct LockTask {
    /// The restricted loss on batch `stream` under label assignment `variant`.
    public var restricted: (_ stream: UInt64, _ variant: Int) -> Tensor
    /// The permitted loss (what users may learn).
    public var permitted: (_ stream: UInt64) -> Tensor
    /// The retain loss (what the base already does well and must keep doing).
    public var retain: (_ stream: UInt64) -> Tensor

    public init(restricted: @escaping (UInt64, Int) -> Tensor, permitted: @escaping (UInt64) -> Tensor, retain: @escaping (UInt64) -> Tensor) {
        self.restricted = restricted; self.permitted = permitted; self.retain = retain
    }
}

/// One outer step of a lock.
public struct LockProgress: Sendable {
    public var step: Int
    public var totalSteps: Int
    public var attack: SimulatedAttack
    /// The restricted loss after the simulated attack (what the lock raises, up to the cap).
    public var restrictedLoss: Float
    /// The permitted loss after a permitted attack of the same configuration.
    public var permittedLoss: Float
    /// The retain loss at the published weights.
    public var retainLoss: Float
}

/// Why a lock cannot run.
public enum GuardLockError: Error, CustomStringConvertible, Equatable {
    case emptyFrozenSet
    case unknownTensor(String)
    case enforcedTensors([String])
    case nonFiniteLoss(step: Int)
    case unreadableCheckpoint(String)

    public var description: String {
        switch self {
        case .emptyFrozenSet: return "the lock needs a frozen set: it changes only the frozen tensors' values"
        case let .unknownTensor(name): return "the frozen set names '\(name)', which the model does not have"
        case let .enforcedTensors(names): return "the model already has enforced tensors (\(names.prefix(3).joined(separator: ", "))): lock the publisher's own base, before any guard is applied"
        case let .nonFiniteLoss(step): return "a loss became non-finite at lock step \(step); lower the lock's or the attacks' learning rates"
        case let .unreadableCheckpoint(reason): return "the lock's checkpoint cannot be resumed: \(reason)"
        }
    }
}

/// Locks the values of a guard's frozen tensors against relearning (the publisher's side).
///
/// The guard freezes a set F of tensors, and the fine-tuning API enforces it, so a user can move only
/// the other tensors U. The lock chooses the values of F so that moving U does not bring the
/// restricted domain back. Each outer step samples an attack (``LockSettings/attack(at:)``), runs it
/// on U from the published values, and moves F (Adam) along the first-order gradient of
/// `−min(L_restricted, τ) + α·L_permitted + β·L_retain`, where `L_restricted` is measured after the
/// restricted attack, `L_permitted` after a permitted attack of the same configuration, and
/// `L_retain` at the published weights. U is restored after every attack: the lock never changes a
/// tensor outside F.
public final class GuardLock {
    public let model: Module
    public let frozen: Set<String>
    public let settings: LockSettings
    public private(set) var step = 0
    private let outer: Adam
    private let others: Set<String>

    public init(model: Module, frozen: Set<String>, settings: LockSettings) throws(GuardLockError) {
        guard !frozen.isEmpty else { throw .emptyFrozenSet }
        let parameters = model.namedParameters()
        let names = Set(parameters.map(\.name))
        if let unknown = frozen.sorted().first(where: { !names.contains($0) }) { throw .unknownTensor(unknown) }
        let enforced = parameters.filter { $0.parameter.isEnforced }.map(\.name)
        guard enforced.isEmpty else { throw .enforcedTensors(enforced) }
        self.model = model
        self.frozen = frozen
        self.settings = settings
        others = names.subtracting(frozen)
        outer = Adam(learningRate: settings.learningRate)
    }

    /// Runs the remaining outer steps (or those up to `stoppingAfter`, for a time-boxed run), saving
    /// the lock's state into `checkpoint` every `settings.checkpointEvery` steps and at the end when
    /// given. Afterwards only F has new values, and nothing is frozen.
    public func lock(_ task: LockTask, checkpoint: URL? = nil, stoppingAfter: Int? = nil, progress: (LockProgress) -> Void = { _ in }) throws {
        defer { try? model.replaceFreezing(with: FreezePlan()) }
        let last = Swift.min(settings.steps, stoppingAfter ?? settings.steps)
        while step < last {
            let result = try outerStep(task)
            step += 1
            progress(result)
            if let checkpoint, step % settings.checkpointEvery == 0 || step == last { try saveCheckpoint(to: checkpoint) }
        }
    }

    private func outerStep(_ task: LockTask) throws -> LockProgress {
        let attack = settings.attack(at: step)
        let base = UInt64(step) &* 4096
        let published = Dictionary(uniqueKeysWithValues: model.namedParameters().filter { others.contains($0.name) }.map { ($0.name, $0.parameter.value) })

        // The restricted attack, then F's gradient of the bounded suppression at the attacked weights.
        try simulate(attack, stream: base) { stream in
            attack.restrictedOnly ? task.restricted(stream, attack.labelVariant)
                                  : (task.restricted(stream, attack.labelVariant) + task.permitted(stream)) * 0.5
        }
        let (restricted, restrictedGradients) = try gradientOfFrozen { task.restricted(base + 1000, attack.labelVariant) }
        restore(published)
        // A permitted attack of the same configuration: F must let it succeed.
        try simulate(attack, stream: base + 2000) { task.permitted($0) }
        let (permitted, permittedGradients) = try gradientOfFrozen { task.permitted(base + 3000) }
        restore(published)
        // The base's own quality, at the published weights.
        let (retain, retainGradients) = try gradientOfFrozen { task.retain(base + 3500) }
        guard restricted.isFinite, permitted.isFinite, retain.isFinite else { throw GuardLockError.nonFiniteLoss(step: step) }

        var total: [String: Tensor] = [:]
        let suppression: Float = restricted < settings.suppressionCap ? -1 : 0
        for name in frozen {
            var sum: Tensor?
            for (weight, gradients) in [(suppression, restrictedGradients), (settings.permittedWeight, permittedGradients), (settings.retainWeight, retainGradients)] {
                guard weight != 0, let g = gradients[name] else { continue }
                sum = sum.map { $0 + g * weight } ?? g * weight
            }
            if let sum { total[name] = sum }
        }
        try outer.step(model, gradients: total)
        return LockProgress(step: step + 1, totalSteps: settings.steps, attack: attack, restrictedLoss: restricted, permittedLoss: permitted, retainLoss: retain)
    }

    /// Trains U (F frozen) for the attack's steps with a fresh optimizer of its kind.
    private func simulate(_ attack: SimulatedAttack, stream: UInt64, loss: (UInt64) -> Tensor) throws {
        try model.replaceFreezing(with: FreezePlan(frozen: frozen))
        let optimizer = attack.makeOptimizer()
        for k in 0..<attack.steps {
            do { _ = try model.trainingStep(optimizer: optimizer, clipGradientNorm: 1) { loss(stream + UInt64(k)) } } catch TrainingError.nonFiniteLoss {
                throw GuardLockError.nonFiniteLoss(step: step)
            }
        }
    }

    /// The loss and its gradients with respect to F (U frozen, as the attack left it).
    private func gradientOfFrozen(_ loss: () -> Tensor) throws -> (Float, [String: Tensor]) {
        try model.replaceFreezing(with: FreezePlan(frozen: others))
        let (value, gradients) = model.valueAndGradient(loss)
        return (value.scalar, gradients)
    }

    private func restore(_ published: [String: Tensor]) {
        for (name, parameter) in model.namedParameters() where others.contains(name) {
            if let value = published[name] { parameter.value = value }
        }
    }

    // MARK: Checkpoints

    /// Writes F's current values, the outer optimizer's moments and the step, atomically.
    public func saveCheckpoint(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (moments, adamSteps) = outer.exportState()
        let values = model.namedParameters().filter { frozen.contains($0.name) }.map { (name: "value.\($0.name)", tensor: $0.parameter.value) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = ["permafrost.lock_step": String(step), "permafrost.adam_steps": String(decoding: try encoder.encode(adamSteps), as: UTF8.self),
                        "permafrost.lock_settings": String(decoding: try encoder.encode(settings), as: UTF8.self)]
        try SafetensorsWriter.write(values + moments.map { (name: $0.name, tensor: $0.tensor) }, metadata: metadata,
                                    to: directory.appendingPathComponent("lock-state.safetensors"))
    }

    /// Continues a lock from ``saveCheckpoint(to:)``'s state (same model, frozen set and settings).
    public func resume(from directory: URL) throws {
        let url = directory.appendingPathComponent("lock-state.safetensors")
        let state: SafetensorsFile
        do { state = try SafetensorsFile(contentsOf: url) } catch { throw GuardLockError.unreadableCheckpoint("\(error)") }
        guard let stepText = state.metadata["permafrost.lock_step"], let saved = Int(stepText),
              let stepsText = state.metadata["permafrost.adam_steps"],
              let adamSteps = try? JSONDecoder().decode([String: Int].self, from: Data(stepsText.utf8)),
              let settingsText = state.metadata["permafrost.lock_settings"],
              let savedSettings = try? JSONDecoder().decode(LockSettings.self, from: Data(settingsText.utf8)) else {
            throw GuardLockError.unreadableCheckpoint("'\(url.path)' lacks the lock's step, optimizer or settings metadata")
        }
        guard savedSettings == settings else { throw GuardLockError.unreadableCheckpoint("it was written with other lock settings") }
        var moments: [String: Tensor] = [:]
        for name in state.names {
            let tensor = try state.tensor(named: name)
            if name.hasPrefix("value.") {
                let tensorName = String(name.dropFirst("value.".count))
                guard frozen.contains(tensorName), let parameter = model.parameter(named: tensorName), parameter.shape == tensor.shape else {
                    throw GuardLockError.unreadableCheckpoint("its tensor '\(tensorName)' is not a frozen tensor of this shape")
                }
                parameter.value = tensor
            } else {
                moments[name] = tensor
            }
        }
        outer.importState(tensors: moments, steps: adamSteps)
        step = saved
    }
}

extension GuardManifest {
    /// Publishes a locked diffusion base: saves `model` as a diffusers folder in `directory` and
    /// returns the guard for it — `frozen` bound to the saved file's digest and to the locked
    /// tensors' digests, signed with `signingKey` when given. `finetune --guard`, the service and
    /// `guard verify` take it like any other guard.
    public static func publishLocked(_ model: UNet2DModel, frozen: Set<String>, to directory: URL, settings: [String: String],
                                     signingKey: Curve25519.Signing.PrivateKey?) throws -> GuardManifest {
        try model.save(directory: directory, metadata: ["permafrost.locked": "true"])
        let digest = try sha256Hex(of: directory.appendingPathComponent(UNet2DModel.weightsFileName))
        var manifest = try GuardManifest(model: model, frozen: frozen, baseSHA256: digest, settings: settings.merging(["locked": "true"]) { a, _ in a })
        if let signingKey { try manifest.sign(with: signingKey) }
        return manifest
    }
}
