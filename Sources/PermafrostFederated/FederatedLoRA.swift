import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// A simulated federated LoRA fine-tune: N clients hold shards of a data set, each round every client
/// starts from the server's adapters, trains them locally (optionally with DP-SGD), and uploads the
/// tensors it trained; the server aggregates.
///
/// Methods: `fedsvd` (clients train B, A frozen; the server averages B and refactorises B̄·A by SVD),
/// `fedavg-lora` (clients train A and B; the server averages each), `frozen-a` (clients train B, A stays
/// its random initial value; the server averages B).
public enum FederatedLoRA {
    public enum Method: String, CaseIterable, Codable, Sendable {
        case fedSVD = "fedsvd", fedAvgLoRA = "fedavg-lora", frozenA = "frozen-a"
        /// Whether clients train (and send) A.
        var clientsTrainA: Bool { self == .fedAvgLoRA }
    }

    public struct Settings: Sendable {
        public var clients = 5
        public var rounds = 30
        public var localSteps = 10
        public var batch = 32
        public var learningRate: Float = 0.5
        public var rank = 8
        /// Each client holds two digits (true) or a random fifth of the data (false).
        public var nonIID = true
        /// Without DP, each client step's gradient is clipped to this L2 norm (DP-SGD clips per example instead).
        public var gradientClip: Float = 1
        public var dp: DPSGDSettings?
        public var delta = 1e-5
        public var seed: UInt64 = 0
        public var pretrainSteps = 300
        public init() {}
    }

    /// One run's outcome.
    public struct Result: Codable, Sendable, Equatable {
        public var method: Method
        public var seed: Int
        public var noiseMultiplier: Float?
        public var testAccuracy: Double
        /// ε at `delta` per client (nil without DP).
        public var epsilon: Double?
        /// Values each client uploaded per round.
        public var uploadedParameters: Int
        enum CodingKeys: String, CodingKey {
            case method, seed, noiseMultiplier = "noise_multiplier", testAccuracy = "test_accuracy", epsilon, uploadedParameters = "uploaded_parameters"
        }
    }

    /// The pretrained base: an MLP (784-256-256-10) trained on digits 0–4 only; the federation then
    /// learns all ten digits through adapters on its three layers.
    public static func pretrainedBase(data: LabeledImages, steps: Int, seed: UInt64) throws -> Sequential {
        var g = PhiloxGenerator(seed: seed)
        let model = Sequential([Flatten(), Linear(784, 256, generator: &g), ReLU(), Linear(256, 256, generator: &g), ReLU(), Linear(256, 10, generator: &g)])
        let optimizer = Adam(learningRate: 1e-3)
        let early = data.selecting(data.labels.indices.filter { data.labels[$0] < 5 })
        try forEachShuffledBatch(of: early, batch: 64, epochs: max(1, steps * 64 / max(early.count, 1) + 1), seed: seed) { step, images, labels in
            guard step < steps else { return }
            _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(images), labels: labels) }
        }
        return model
    }

    /// A fresh MLP with `base`'s weights (adapters go on the copy; the base is never changed).
    static func copy(of base: Sequential) throws -> Sequential {
        var g = PhiloxGenerator(seed: 0)
        let model = Sequential([Flatten(), Linear(784, 256, generator: &g), ReLU(), Linear(256, 256, generator: &g), ReLU(), Linear(256, 10, generator: &g)])
        for ((_, target), (_, source)) in zip(model.namedParameters(), base.namedParameters()) { target.value = source.value }
        return model
    }

    /// The client shards: two digits each (non-IID) or a random equal split.
    static func shards(_ data: LabeledImages, clients: Int, nonIID: Bool, seed: UInt64) -> [LabeledImages] {
        var generator = PhiloxGenerator(seed: seed &+ 7)
        var order = Array(0..<data.count)
        order.shuffle(using: &generator)
        if nonIID { order.sort { data.labels[$0] < data.labels[$1] } }
        let size = data.count / clients
        return (0..<clients).map { c in data.selecting(Array(order[(c * size)..<((c + 1) * size)])) }
    }

    /// Runs one method from `base` (whose weights are not changed).
    public static func run(_ method: Method, base: Sequential, train: LabeledImages, test: LabeledImages, settings: Settings,
                           progress: (Int) -> Void = { _ in }) throws -> Result {
        let model = try copy(of: base)
        try model.addLowRankAdapters(matching: ["*"], configuration: LoRAConfiguration(rank: settings.rank, alpha: Float(settings.rank)),
                                     seed: settings.seed)
        let adapters = model.lowRankAdapterParameters()
        let aNames = Set(adapters.map(\.name).filter { $0.hasSuffix("lora_A.weight") })
        if !method.clientsTrainA { try model.freeze(names: Array(aNames)) }
        var global = Dictionary(uniqueKeysWithValues: adapters.map { ($0.name, $0.parameter.value) })
        let shards = shards(train, clients: settings.clients, nonIID: settings.nonIID, seed: settings.seed)
        var generator = PhiloxGenerator(seed: settings.seed, stream: 99)
        var uploaded = 0
        for round in 0..<settings.rounds {
            var uploads: [[String: Tensor]] = []
            for (c, shard) in shards.enumerated() {
                for (name, parameter) in adapters { parameter.value = global[name]! }
                let optimizer = SGD(learningRate: settings.learningRate)
                var batchGenerator = PhiloxGenerator(seed: settings.seed &+ UInt64(c), stream: UInt64(round))
                for _ in 0..<settings.localSteps {
                    let indices = (0..<settings.batch).map { _ in Int(batchGenerator.nextUInt32() % UInt32(shard.count)) }
                    let images = try shard.batch(indices, range: -1...1), labels = indices.map { shard.labels[$0] }
                    if let dp = settings.dp {
                        let per = images.count / settings.batch
                        let gradients = try dp.gradients(model, examples: settings.batch, generator: &generator) { i in
                            let one = Tensor(shape: [1] + Array(images.shape.dropFirst()), scalars: Array(images.scalars[(i * per)..<((i + 1) * per)]))
                            return crossEntropy(logits: model(one), labels: [labels[i]])
                        }
                        try optimizer.step(model, gradients: gradients)
                    } else {
                        _ = try model.trainingStep(optimizer: optimizer, clipGradientNorm: settings.gradientClip) {
                            crossEntropy(logits: model(images), labels: labels)
                        }
                    }
                }
                // A client sends exactly the tensors it trained.
                let sent = model.trainableParameters()
                uploaded = sent.reduce(0) { $0 + $1.parameter.value.count }
                uploads.append(Dictionary(uniqueKeysWithValues: sent.map { ($0.name, $0.parameter.value) }))
            }
            for name in uploads[0].keys {
                let mean = uploads.dropFirst().reduce(uploads[0][name]!.scalars) { sum, upload in zip(sum, upload[name]!.scalars).map { $0 + $1 } }
                    .map { $0 / Float(uploads.count) }
                global[name] = Tensor(shape: global[name]!.shape, scalars: mean)
            }
            if method == .fedSVD {
                for (module, _) in model.lowRankAdapters() {
                    let (b, a) = try FedSVD.refactorize(b: global[module + ".lora_B.weight"]!, a: global[module + ".lora_A.weight"]!)
                    (global[module + ".lora_B.weight"], global[module + ".lora_A.weight"]) = (b, a)
                }
            }
            progress(round + 1)
        }
        for (name, parameter) in adapters { parameter.value = global[name]! }
        model.setTraining(false)
        let accuracy = try classificationAccuracy(on: test) { model($0) }
        let perClient = shards.map(\.count).min() ?? 1
        let epsilon = settings.dp.map {
            PrivacyAccountant.epsilon(samplingRate: Double(settings.batch) / Double(perClient), noiseMultiplier: Double($0.noiseMultiplier),
                                      steps: settings.rounds * settings.localSteps, delta: settings.delta)
        }
        return Result(method: method, seed: Int(settings.seed), noiseMultiplier: settings.dp?.noiseMultiplier, testAccuracy: accuracy,
                      epsilon: epsilon, uploadedParameters: uploaded)
    }

    /// Mean test accuracy and ε over seeds, one row per (method, noise).
    public static func table(_ results: [Result]) -> String {
        var lines = ["| method | DP noise σ | test accuracy (mean ± sd) | ε at δ = 1e-5 | values sent per client per round | seeds |",
                     "| --- | --- | --- | --- | --- | --- |"]
        let noises = Array(Set(results.map { $0.noiseMultiplier ?? 0 })).sorted()
        for method in Method.allCases {
            for noise in noises {
                let cell = results.filter { $0.method == method && ($0.noiseMultiplier ?? 0) == noise }
                guard !cell.isEmpty else { continue }
                let values = cell.map(\.testAccuracy), mean = values.reduce(0, +) / Double(values.count)
                let sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(max(values.count - 1, 1))).squareRoot()
                let epsilon = cell[0].epsilon.map { String(format: "%.2f", $0) } ?? "∞ (no DP)"
                lines.append(String(format: "| %@ | %@ | %.1f%% ± %.1f | %@ | %d | %d |", method.rawValue, noise == 0 ? "—" : String(format: "%g", noise),
                                    mean * 100, sd * 100, epsilon, cell[0].uploadedParameters, cell.count))
            }
        }
        return lines.joined(separator: "\n")
    }
}
