import Crypto
import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// A user attack a lock simulates: the optimizer, its rate, how many steps, and what it trains on.
public struct SimulatedAttack: Sendable, Equatable, Codable, CustomStringConvertible {
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
    /// How many steps this attacker trains in all before it starts again from the published values:
    /// `steps` without persistent attackers; longer with them (``LockSettings/attackers``), so the lock
    /// also sees attacks that went far from the published weights.
    public var horizon: Int

    public var description: String {
        "\(steps)\(horizon > steps ? "/\(horizon)" : "") × \(optimizer.rawValue) @ \(String(format: "%.1e", learningRate)), labels \(labelVariant)\(restrictedOnly ? "" : ", mixed")"
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
    /// Retain-only steps on F after every outer step (SOPHON's normal-training reinforcement): the
    /// base's quality is restored while the trap is built, not merely traded against it.
    public var retainSteps = 0
    /// Persistent attackers: 0 starts every simulated attack from the published values; N > 0 keeps N
    /// attackers that continue from where they stopped (weights and optimizer state), each for a
    /// horizon drawn from ``attackHorizon``, so long attacks are simulated at the cost of short ones.
    public var attackers = 0
    /// Total steps of a persistent attacker, drawn log-uniformly.
    public var attackHorizon = 5...300
    /// The fine-tuning API enforces the locked tensors (the simulated attacks move only the others).
    /// False is SOPHON's setting: nothing is enforced, the attacks move every tensor, and the lock's
    /// gradient at the attacked weights is applied to the published ones (first-order MAML) — the
    /// `lock-only` baseline that tells what enforcement adds.
    public var enforced = true
    /// λ of a proximal pull of F towards the base's values (L2-SP, decoupled as AdamW decouples weight
    /// decay): after every outer step θ_F ← θ_F − rate·λ·(θ_F − θ_F⁰). Why: Adam normalises every
    /// element's step, so elements the trap does not need drift with the noise of the losses' batch
    /// estimates — a lock moved F by a quarter of its norm — and that drift, not the trap, costs the
    /// base its quality. nil (or 0) pulls nothing.
    public var proximalWeight: Float?

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
        let restrictedOnly = uniform() < restrictedOnlyShare
        var horizon = steps
        if attackers > 0 {
            let low = log(Double(Swift.max(attackHorizon.lowerBound, 1))), high = log(Double(Swift.max(attackHorizon.upperBound, 1)))
            horizon = Swift.max(steps, Int(exp(low + uniform() * (high - low)).rounded()))
        }
        return SimulatedAttack(steps: steps, optimizer: optimizer, learningRate: rate, labelVariant: variant, restrictedOnly: restrictedOnly, horizon: horizon)
    }

    /// The settings as text, for a guard manifest's record.
    public var dictionary: [String: String] {
        ["lock_steps": "\(steps)", "lock_lr": "\(learningRate)", "lock_attack_steps": "\(attackSteps.lowerBound)-\(attackSteps.upperBound)",
         "lock_attack_lr": "\(attackLearningRate.lowerBound)-\(attackLearningRate.upperBound)",
         "lock_attack_optimizers": attackOptimizers.map(\.rawValue).joined(separator: ","), "lock_sgd_rate_factor": "\(sgdRateFactor)",
         "lock_restricted_only_share": "\(restrictedOnlyShare)", "lock_label_variants": "\(labelVariants)",
         "lock_suppression_cap": "\(suppressionCap)", "lock_permitted_weight": "\(permittedWeight)", "lock_retain_weight": "\(retainWeight)",
         "lock_seed": "\(seed)", "lock_retain_steps": "\(retainSteps)", "lock_attackers": "\(attackers)",
         "lock_attack_horizon": "\(attackHorizon.lowerBound)-\(attackHorizon.upperBound)", "lock_enforced": "\(enforced)",
         "lock_proximal_weight": "\(proximalWeight ?? 0)"]
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
    /// How many steps the restricted attacker has trained so far (its horizon's progress).
    public var attackDepth: Int
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
    case incompatibleBase(String)

    public var description: String {
        switch self {
        case .emptyFrozenSet: return "the lock needs a frozen set: it changes only the frozen tensors' values"
        case let .unknownTensor(name): return "the frozen set names '\(name)', which the model does not have"
        case let .enforcedTensors(names): return "the model already has enforced tensors (\(names.prefix(3).joined(separator: ", "))): lock the publisher's own base, before any guard is applied"
        case let .nonFiniteLoss(step): return "a loss became non-finite at lock step \(step); lower the lock's or the attacks' learning rates"
        case let .unreadableCheckpoint(reason): return "the lock's checkpoint cannot be resumed: \(reason)"
        case let .incompatibleBase(problem): return "the base cannot be locked on the shipped data: \(problem)"
        }
    }
}

/// Locks the values of a guard's frozen tensors against relearning (the publisher's side).
///
/// The guard freezes a set F of tensors, and the fine-tuning API enforces it, so a user can move only
/// the other tensors U. The lock chooses the values of F so that moving U does not bring the
/// restricted domain back. Each outer step samples an attack (``LockSettings/attack(at:)``), runs it
/// on U, and moves F (Adam) along the first-order gradient of
/// `−min(L_restricted, τ) + α·L_permitted + β·L_retain`, where `L_restricted` is measured after the
/// restricted attack, `L_permitted` after a permitted attack of the same configuration from the
/// published values, and `L_retain` at the published weights; then ``LockSettings/retainSteps``
/// retain-only steps restore the base's quality. With persistent attackers the restricted attack
/// continues an earlier one instead of starting from the published values. U is restored after every
/// attack: the lock never changes a tensor outside F.
public final class GuardLock {
    public let model: Module
    public let frozen: Set<String>
    public let settings: LockSettings
    public private(set) var step = 0
    private let outer: Adam
    private let reinforcement: Adam
    /// What the simulated attacks train: the tensors outside F, or every tensor when nothing is enforced.
    private let others: Set<String>
    /// What holds still while F's gradient is taken.
    private let fixed: Set<String>
    private var attackers: [Attacker?]
    /// F's values before the lock, which ``LockSettings/proximalWeight`` pulls towards.
    private let anchor: [String: Tensor]

    /// A simulated user who keeps training across outer steps: U's values and the optimizer's state.
    final class Attacker {
        let attack: SimulatedAttack
        var values: [String: Tensor]
        let optimizer: Optimizer
        var depth = 0
        init(attack: SimulatedAttack, values: [String: Tensor]) {
            self.attack = attack; self.values = values; optimizer = attack.makeOptimizer()
        }
        var isFinished: Bool { depth >= attack.horizon }
    }

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
        fixed = names.subtracting(frozen)
        others = settings.enforced ? fixed : names
        outer = Adam(learningRate: settings.learningRate)
        reinforcement = Adam(learningRate: settings.learningRate)
        attackers = Array(repeating: nil, count: Swift.max(settings.attackers, 0))
        anchor = Dictionary(uniqueKeysWithValues: parameters.filter { frozen.contains($0.name) }.map { ($0.name, $0.parameter.value) })
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
        let drawn = settings.attack(at: step)
        let base = UInt64(step) &* 4096
        let published = valuesOfOthers()

        // The restricted attack (fresh, or a persistent attacker's next stretch), then F's gradient of
        // the bounded suppression at the attacked weights.
        let attacker: Attacker
        if attackers.isEmpty {
            attacker = Attacker(attack: drawn, values: published)
        } else {
            let slot = step % attackers.count
            if attackers[slot] == nil || attackers[slot]!.isFinished { attackers[slot] = Attacker(attack: drawn, values: published) }
            attacker = attackers[slot]!
            restore(attacker.values)
        }
        let attack = attacker.attack
        let stretch = Swift.min(drawn.steps, attack.horizon - attacker.depth)
        try simulate(optimizer: attacker.optimizer, steps: stretch, stream: base) { stream in
            attack.restrictedOnly ? task.restricted(stream, attack.labelVariant)
                                  : (task.restricted(stream, attack.labelVariant) + task.permitted(stream)) * 0.5
        }
        attacker.depth += stretch
        if !attackers.isEmpty { attacker.values = valuesOfOthers() }
        let (restricted, restrictedGradients) = try gradientOfFrozen { task.restricted(base + 1000, attack.labelVariant) }
        restore(published)
        // A permitted attack of the drawn configuration from the published values: F must let it succeed.
        try simulate(optimizer: drawn.makeOptimizer(), steps: drawn.steps, stream: base + 2000) { task.permitted($0) }
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
        for k in 0..<settings.retainSteps {
            let (value, gradients) = try gradientOfFrozen { task.retain(base + 3600 + UInt64(k)) }
            guard value.isFinite else { throw GuardLockError.nonFiniteLoss(step: step) }
            try reinforcement.step(model, gradients: gradients)
        }
        if let weight = settings.proximalWeight, weight > 0 {
            let pull = Swift.min(settings.learningRate * weight, 1)
            for (name, parameter) in model.namedParameters() {
                guard let origin = anchor[name] else { continue }
                parameter.value = parameter.value - (parameter.value - origin) * pull
            }
        }
        return LockProgress(step: step + 1, totalSteps: settings.steps, attack: attack, attackDepth: attacker.depth,
                            restrictedLoss: restricted, permittedLoss: permitted, retainLoss: retain)
    }

    /// Trains U (F frozen when enforced) for `steps` steps with `optimizer`.
    private func simulate(optimizer: Optimizer, steps: Int, stream: UInt64, loss: (UInt64) -> Tensor) throws {
        try model.replaceFreezing(with: FreezePlan(frozen: settings.enforced ? frozen : []))
        for k in 0..<steps {
            do { _ = try model.trainingStep(optimizer: optimizer, clipGradientNorm: 1) { loss(stream + UInt64(k)) } } catch TrainingError.nonFiniteLoss {
                throw GuardLockError.nonFiniteLoss(step: step)
            }
        }
    }

    /// The loss and its gradients with respect to F (the rest frozen, as the attack left it).
    private func gradientOfFrozen(_ loss: () -> Tensor) throws -> (Float, [String: Tensor]) {
        try model.replaceFreezing(with: FreezePlan(frozen: fixed))
        let (value, gradients) = model.valueAndGradient(loss)
        return (value.scalar, gradients)
    }

    private func valuesOfOthers() -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: model.namedParameters().filter { others.contains($0.name) }.map { ($0.name, $0.parameter.value) })
    }

    private func restore(_ values: [String: Tensor]) {
        for (name, parameter) in model.namedParameters() where others.contains(name) {
            if let value = values[name] { parameter.value = value }
        }
    }

    // MARK: Checkpoints

    /// What a checkpoint records of a persistent attacker besides its tensors.
    private struct AttackerRecord: Codable {
        var slot: Int
        var attack: SimulatedAttack
        var depth: Int
        var adamSteps: [String: Int]
    }

    /// Writes F's current values, the optimizers' state, the persistent attackers and the step, atomically.
    public func saveCheckpoint(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (moments, adamSteps) = outer.exportState()
        let (retainMoments, retainSteps) = reinforcement.exportState()
        var tensors = model.namedParameters().filter { frozen.contains($0.name) }.map { (name: "value.\($0.name)", tensor: $0.parameter.value) }
        tensors += moments + retainMoments.map { (name: "retain." + $0.name, tensor: $0.tensor) }
        var records: [AttackerRecord] = []
        for (slot, attacker) in attackers.enumerated() {
            guard let attacker else { continue }
            let prefix = "attacker.\(slot)."
            tensors += attacker.values.keys.sorted().map { (name: prefix + "value." + $0, tensor: attacker.values[$0]!) }
            var steps: [String: Int] = [:]
            if let adam = attacker.optimizer as? Adam {
                let state = adam.exportState()
                tensors += state.tensors.map { (name: prefix + $0.name, tensor: $0.tensor) }
                steps = state.steps
            } else if let sgd = attacker.optimizer as? SGD {
                tensors += sgd.exportState().map { (name: prefix + $0.name, tensor: $0.tensor) }
            }
            records.append(AttackerRecord(slot: slot, attack: attacker.attack, depth: attacker.depth, adamSteps: steps))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        func text(_ value: some Encodable) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        let metadata = ["permafrost.lock_step": String(step), "permafrost.adam_steps": try text(adamSteps),
                        "permafrost.retain_adam_steps": try text(retainSteps), "permafrost.attackers": try text(records),
                        "permafrost.lock_settings": try text(settings)]
        try SafetensorsWriter.write(tensors, metadata: metadata, to: directory.appendingPathComponent("lock-state.safetensors"))
    }

    /// Continues a lock from ``saveCheckpoint(to:)``'s state (same model, frozen set and settings).
    public func resume(from directory: URL) throws {
        let url = directory.appendingPathComponent("lock-state.safetensors")
        let state: SafetensorsFile
        do { state = try SafetensorsFile(contentsOf: url) } catch { throw GuardLockError.unreadableCheckpoint("\(error)") }
        func decode<T: Decodable>(_ key: String, as type: T.Type) -> T? {
            state.metadata[key].flatMap { try? JSONDecoder().decode(T.self, from: Data($0.utf8)) }
        }
        guard let stepText = state.metadata["permafrost.lock_step"], let saved = Int(stepText),
              let adamSteps = decode("permafrost.adam_steps", as: [String: Int].self),
              let retainSteps = decode("permafrost.retain_adam_steps", as: [String: Int].self),
              let records = decode("permafrost.attackers", as: [AttackerRecord].self),
              let savedSettings = decode("permafrost.lock_settings", as: LockSettings.self) else {
            throw GuardLockError.unreadableCheckpoint("'\(url.path)' lacks the lock's step, optimizer, attacker or settings metadata")
        }
        guard savedSettings == settings else { throw GuardLockError.unreadableCheckpoint("it was written with other lock settings") }
        var moments: [String: Tensor] = [:], retainMoments: [String: Tensor] = [:]
        var attackerTensors: [Int: [String: Tensor]] = [:]
        for name in state.names {
            let tensor = try state.tensor(named: name)
            if name.hasPrefix("value.") {
                let tensorName = String(name.dropFirst("value.".count))
                guard frozen.contains(tensorName), let parameter = model.parameter(named: tensorName), parameter.shape == tensor.shape else {
                    throw GuardLockError.unreadableCheckpoint("its tensor '\(tensorName)' is not a frozen tensor of this shape")
                }
                parameter.value = tensor
            } else if name.hasPrefix("retain.") {
                retainMoments[String(name.dropFirst("retain.".count))] = tensor
            } else if name.hasPrefix("attacker.") {
                let parts = name.split(separator: ".", maxSplits: 2)
                guard parts.count == 3, let slot = Int(parts[1]) else { throw GuardLockError.unreadableCheckpoint("its tensor '\(name)' names no attacker") }
                attackerTensors[slot, default: [:]][String(parts[2])] = tensor
            } else {
                moments[name] = tensor
            }
        }
        outer.importState(tensors: moments, steps: adamSteps)
        reinforcement.importState(tensors: retainMoments, steps: retainSteps)
        attackers = Array(repeating: nil, count: attackers.count)
        for record in records {
            guard attackers.indices.contains(record.slot) else { throw GuardLockError.unreadableCheckpoint("it has attacker \(record.slot) of \(attackers.count)") }
            let tensors = attackerTensors[record.slot] ?? [:]
            var values: [String: Tensor] = [:]
            for (name, tensor) in tensors where name.hasPrefix("value.") { values[String(name.dropFirst("value.".count))] = tensor }
            guard Set(values.keys) == others else { throw GuardLockError.unreadableCheckpoint("attacker \(record.slot) lacks some of the unfrozen tensors") }
            let attacker = Attacker(attack: record.attack, values: values)
            attacker.depth = record.depth
            if let adam = attacker.optimizer as? Adam { adam.importState(tensors: tensors, steps: record.adamSteps) }
            if let sgd = attacker.optimizer as? SGD { sgd.importState(tensors: tensors) }
            attackers[record.slot] = attacker
        }
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
