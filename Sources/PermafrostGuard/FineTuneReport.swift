import PermafrostNN

/// What a guarded fine-tuning run did and the proof that it kept the guard: written as
/// `report.json` by `permafrost finetune`, served by the service at `/v1/jobs/{id}/report`. One
/// schema, snake_case keys (documented in `docs/FINETUNE-REPORT.md`).
public struct FineTuneReport: Codable, Sendable, Equatable {
    /// One guarded tensor's digest in the guard and after training.
    public struct GuardedTensor: Codable, Sendable, Equatable {
        public var name: String
        public var expectedSHA256: String
        public var actualSHA256: String
        enum CodingKeys: String, CodingKey { case name, expectedSHA256 = "expected_sha256", actualSHA256 = "actual_sha256" }
    }

    // Where the run came from (set by the caller: a service job, or the CLI's paths).
    public var job: String?
    public var base: String?
    public var guardFile: String?

    // The proof.
    /// SHA-256 of the base checkpoint file the run started from.
    public var baseSHA256: String
    public var guardPublicKey: String?
    public var guardSignature: String?
    /// Every guarded tensor's SHA-256 after training equals the guard's (and so the base's); nil without a guard.
    public var guardedTensorsBitIdentical: Bool?
    public var guardedTensors: [GuardedTensor]
    public var changedGuardedTensors: [String]
    /// The trainable tensors, exactly those the delta checkpoint holds.
    public var deltaTensors: [String]
    public var deltaSHA256: String?
    /// A LoRA run's PEFT adapter: the layers adapted, and the SHA-256 of `adapter_config.json`
    /// (`delta_sha256` is then that of `adapter_model.safetensors`).
    public var loraTargets: [String]?
    public var adapterConfigSHA256: String?

    // The run.
    public var frozenTensors: Int
    public var trainableTensors: Int
    public var trainableParameters: Int
    public var classSlots: [Int]
    public var steps: Int
    public var resumedFromStep: Int?
    /// The last step's loss.
    public var finalLoss: Double?
    /// Mean loss of the last (up to 50) steps.
    public var averageLoss: Double?
    /// Wall time over the steps this process ran.
    public var secondsPerStep: Double
    /// Median step time after the first 10 steps (a dynamic freezer trains everything at first).
    public var medianSecondsPerStep: Double?
    /// Most tensor bytes any step held.
    public var peakTensorBytes: Int?
    /// Most tensor bytes a step held after the first 10.
    public var steadyPeakTensorBytes: Int?
    /// The last step's tensor memory by kind.
    public var memory: MemoryReport?
    /// The process's peak resident set size, MiB.
    public var peakRSSMegabytes: Double?
    public var scheduler: String
    public var freezeBudget: Double?
    public var activationCompression: Bool
    public var weightInputCompression: Bool

    enum CodingKeys: String, CodingKey {
        case job, base, guardFile = "guard_file", baseSHA256 = "base_sha256", guardPublicKey = "guard_public_key"
        case guardSignature = "guard_signature", guardedTensorsBitIdentical = "guarded_tensors_bit_identical"
        case guardedTensors = "guarded_tensors", changedGuardedTensors = "changed_guarded_tensors"
        case deltaTensors = "delta_tensors", deltaSHA256 = "delta_sha256", frozenTensors = "frozen_tensors"
        case loraTargets = "lora_targets", adapterConfigSHA256 = "adapter_config_sha256"
        case trainableTensors = "trainable_tensors", trainableParameters = "trainable_parameters", classSlots = "class_slots"
        case steps, resumedFromStep = "resumed_from_step", finalLoss = "final_loss", averageLoss = "average_loss"
        case secondsPerStep = "seconds_per_step", medianSecondsPerStep = "median_seconds_per_step"
        case peakTensorBytes = "peak_tensor_bytes", steadyPeakTensorBytes = "steady_peak_tensor_bytes", memory
        case peakRSSMegabytes = "peak_rss_mb", scheduler, freezeBudget = "freeze_budget"
        case activationCompression = "activation_compression", weightInputCompression = "weight_input_compression"
    }
}
