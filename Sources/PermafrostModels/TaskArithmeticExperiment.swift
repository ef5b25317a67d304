import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Task arithmetic with and without OrthoReg on the shipped images: an MLP encoder pretrained on the
/// ten digits, fine-tuned (encoder + its own head) on three tasks — digit parity, digit ≥ 5, and
/// Fashion trouser/sneaker/bag — then merged as θ_pretrained + α·Σ τ_task, each task read by its own
/// head. α is chosen on held-out training images; accuracies are on the test split.
public enum TaskArithmeticExperiment {
    public struct Settings: Sendable {
        public var pretrainSteps = 600
        public var taskSteps = 300
        public var batch = 64
        public var learningRate: Float = 1e-3
        /// OrthoReg weights to compare (0: plain fine-tuning).
        public var orthoLambdas: [Float] = [0, 0.01, 0.1]
        public var scales: [Double] = [0.3, 0.5, 0.7, 1.0]
        public var seeds = 3
        /// Training images per task held out to choose α.
        public var validation = 2000
        public init() {}
    }

    /// One task's accuracy for one seed and regulariser weight.
    public struct Row: Codable, Sendable, Equatable {
        public var seed: Int
        public var orthoLambda: Float
        public var task: String
        /// Its own fine-tuned encoder and head.
        public var fineTuned: Double
        /// The merged encoder (α chosen on validation) with the task's head.
        public var merged: Double
        public var scale: Double
        enum CodingKeys: String, CodingKey { case seed, orthoLambda = "ortho_lambda", task, fineTuned = "fine_tuned", merged, scale }
    }

    struct Task: Sendable {
        var name: String
        var digits: Set<Int>, fashion: Set<Int>
        var label: @Sendable (Int) -> Int
        var classes: Int
    }

    static let tasks = [
        Task(name: "digit parity", digits: Set(0..<10), fashion: [], label: { $0 % 2 }, classes: 2),
        Task(name: "digit ≥ 5", digits: Set(0..<10), fashion: [], label: { $0 >= 5 ? 1 : 0 }, classes: 2),
        Task(name: "fashion 1/7/8", digits: [], fashion: [1, 7, 8], label: { $0 - 10 }, classes: 3),
    ]

    static func encoder(seed: UInt64) -> Sequential {
        var g = PhiloxGenerator(seed: seed)
        return Sequential([Linear(784, 256, generator: &g), ReLU(), Linear(256, 128, generator: &g), ReLU()])
    }

    static func copy(_ source: Module, into target: Module) {
        for ((_, s), (_, t)) in zip(source.namedParameters(), target.namedParameters()) { t.value = s.value }
    }

    static func flat(_ images: Tensor) -> Tensor { images.reshaped([images.shape[0], 784]) }

    /// Trains `encoder` and `head` for `steps` batches of `data` (Adam, cosine schedule), adding
    /// λ·OrthoReg on the encoder's updates when λ > 0.
    static func train(_ encoder: Sequential, _ head: Linear, on data: LabeledImages, steps: Int, settings: Settings, orthoLambda: Float,
                      seed: UInt64) throws {
        let model = Sequential([encoder, head])
        let optimizer = Adam(learningRate: settings.learningRate)
        let regularizer = orthoLambda > 0 ? OrthogonalUpdateRegularizer(pretrained: encoder) : nil
        let epochs = max(1, (steps * settings.batch + data.count - 1) / data.count)
        try forEachShuffledBatch(of: data, batch: settings.batch, epochs: epochs, seed: seed) { step, images, labels in
            guard step < steps else { return }
            optimizer.learningRate = LearningRateSchedule.cosine(peak: settings.learningRate, minimum: settings.learningRate / 50, warmupSteps: 20,
                                                                 totalSteps: steps).rate(atStep: step)
            _ = try model.trainingStep(optimizer: optimizer) {
                let loss = crossEntropy(logits: model(flat(images)), labels: labels)
                return regularizer.map { loss + $0.penalty(encoder) * orthoLambda } ?? loss
            }
        }
    }

    static func accuracy(_ encoder: Sequential, _ head: Linear, on data: LabeledImages) throws -> Double {
        try classificationAccuracy(on: data, batch: 500) { head(encoder(flat($0))) }
    }

    /// Runs every seed and λ; `progress` gets a line per finished fine-tune.
    public static func run(data: ShippedData, settings: Settings, progress: (String) -> Void = { _ in }) throws -> [Row] {
        var taskData: [(train: LabeledImages, validation: LabeledImages, test: LabeledImages)] = []
        for task in tasks {
            func load(_ split: String) throws -> LabeledImages {
                var images = try data.load(split: split, digits: task.digits, fashion: task.fashion)
                images.labels = images.labels.map(task.label)
                return images
            }
            let train = try load("train"), test = try load("t10k")
            let cut = max(0, train.count - settings.validation)
            taskData.append((train.selecting(Array(0..<cut)), train.selecting(Array(cut..<train.count)), test))
        }
        var digits = try data.load(split: "train", digits: Set(0..<10))
        digits = digits.selecting(Array(0..<min(digits.count, settings.pretrainSteps * settings.batch)))
        var rows: [Row] = []
        for seed in 0..<settings.seeds {
            let pretrained = encoder(seed: UInt64(seed))
            var g = PhiloxGenerator(seed: UInt64(seed) &+ 100)
            try train(pretrained, Linear(128, 10, generator: &g), on: digits, steps: settings.pretrainSteps, settings: settings, orthoLambda: 0,
                      seed: UInt64(seed))
            for lambda in settings.orthoLambdas {
                var vectors: [TaskVector] = [], heads: [Linear] = [], tuned: [Double] = []
                for (t, task) in tasks.enumerated() {
                    let model = encoder(seed: UInt64(seed))
                    copy(pretrained, into: model)
                    let head = Linear(128, task.classes, generator: &g)
                    try train(model, head, on: taskData[t].train, steps: settings.taskSteps, settings: settings, orthoLambda: lambda,
                              seed: UInt64(seed * 10 + t))
                    vectors.append(try TaskVector(pretrained: pretrained, fineTuned: model))
                    heads.append(head)
                    tuned.append(try accuracy(model, head, on: taskData[t].test))
                    progress(String(format: "seed %d, λ %g, %@: fine-tuned %.1f%%", seed, lambda, task.name, tuned.last! * 100))
                }
                let sum = try vectors.dropFirst().reduce(vectors[0]) { try $0 + $1 }
                func merged(_ scale: Double) throws -> Sequential {
                    let model = encoder(seed: UInt64(seed))
                    copy(pretrained, into: model)
                    try sum.scaled(by: scale).apply(to: model)
                    return model
                }
                var best = (scale: settings.scales[0], score: -1.0)
                for scale in settings.scales {
                    let model = try merged(scale)
                    let score = try zip(heads, taskData).map { try accuracy(model, $0, on: $1.validation) }.reduce(0, +)
                    if score > best.score { best = (scale, score) }
                }
                let model = try merged(best.scale)
                for (t, task) in tasks.enumerated() {
                    rows.append(Row(seed: seed, orthoLambda: lambda, task: task.name, fineTuned: tuned[t],
                                    merged: try accuracy(model, heads[t], on: taskData[t].test), scale: best.scale))
                }
            }
        }
        return rows
    }

    /// Mean accuracy over seeds per λ and task: fine-tuned alone, merged, and the drop.
    public static func table(_ rows: [Row]) -> String {
        var lines = ["| OrthoReg λ | task | fine-tuned alone | merged (task arithmetic) | α chosen | seeds |", "| --- | --- | --- | --- | --- | --- |"]
        for lambda in Array(Set(rows.map(\.orthoLambda))).sorted() {
            for task in tasks.map(\.name) {
                let cell = rows.filter { $0.orthoLambda == lambda && $0.task == task }
                guard !cell.isEmpty else { continue }
                func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
                lines.append(String(format: "| %g | %@ | %.1f%% | %.1f%% | %@ | %d |", lambda, task, mean(cell.map(\.fineTuned)) * 100,
                                    mean(cell.map(\.merged)) * 100, cell.map { String(format: "%.1f", $0.scale) }.joined(separator: ", "), cell.count))
            }
        }
        return lines.joined(separator: "\n")
    }
}
