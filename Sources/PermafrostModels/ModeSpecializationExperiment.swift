import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Dopamine's mode-specialisation experiment (arXiv 2602.11726): an MLP pretrained on a 50/50 mix of
/// upright MNIST and MNIST rotated 45° (the "foundation"), frozen, then specialised to the rotated
/// mode — left as it is (frozen), with per-neuron gates (threshold and gain per hidden unit), or with
/// LoRA on its three layers. Accuracy on rotated and upright test digits, trainable parameters, and
/// for the gates their active fraction and the units whose firing the specialisation changed most.
public enum ModeSpecializationExperiment {
    public struct Settings: Sendable {
        public var pretrainSteps = 1500
        public var specializeSteps = 600
        public var batch = 64
        public var gateLearningRate: Float = 1e-2
        public var loraLearningRate: Float = 1e-3
        public var loraRank = 4
        public var seeds = 3
        public var angle: Double = 45
        public init() {}
    }

    public struct Row: Codable, Sendable, Equatable {
        public var seed: Int
        public var method: String
        public var trainableParameters: Int
        public var rotatedAccuracy: Double
        public var uprightAccuracy: Double
        /// Gates only: rotated accuracy with the gates hardened, and the share of (image, unit) pairs active
        /// (gate on and a positive activation).
        public var hardenedRotatedAccuracy: Double?
        public var activeFraction: Double?
        /// Gates only: the ten units whose firing rate on rotated digits rose or fell most, "layer:unit ±Δ".
        public var attributions: [String]?
        enum CodingKeys: String, CodingKey {
            case seed, method, trainableParameters = "trainable_parameters", rotatedAccuracy = "rotated_accuracy"
            case uprightAccuracy = "upright_accuracy", hardenedRotatedAccuracy = "hardened_rotated_accuracy"
            case activeFraction = "active_fraction", attributions
        }
    }

    /// Each image rotated by `degrees` about its centre (bilinear, black outside).
    public static func rotated(_ data: LabeledImages, degrees: Double) -> LabeledImages {
        let (h, w) = (data.height, data.width), size = h * w
        let (c, s) = (cos(degrees * .pi / 180), sin(degrees * .pi / 180))
        let (cy, cx) = (Double(h - 1) / 2, Double(w - 1) / 2)
        var pixels = [UInt8](repeating: 0, count: data.pixels.count)
        for image in 0..<data.count {
            let base = image * size
            for y in 0..<h {
                for x in 0..<w {
                    // The source point that lands on (x, y).
                    let dx = Double(x) - cx, dy = Double(y) - cy
                    let sx = c * dx + s * dy + cx, sy = -s * dx + c * dy + cy
                    let x0 = Int(sx.rounded(.down)), y0 = Int(sy.rounded(.down))
                    let fx = sx - Double(x0), fy = sy - Double(y0)
                    func at(_ yy: Int, _ xx: Int) -> Double { yy >= 0 && yy < h && xx >= 0 && xx < w ? Double(data.pixels[base + yy * w + xx]) : 0 }
                    let value = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1))
                    pixels[base + y * w + x] = UInt8(max(0, min(255, value.rounded())))
                }
            }
        }
        return LabeledImages(pixels: pixels, labels: data.labels, height: h, width: w)
    }

    static func mlp(seed: UInt64) -> Sequential {
        var g = PhiloxGenerator(seed: seed)
        return Sequential([Flatten(), Linear(784, 256, generator: &g), ReLU(), Linear(256, 256, generator: &g), ReLU(), Linear(256, 10, generator: &g)])
    }

    static func train(_ model: Sequential, on data: LabeledImages, steps: Int, batch: Int, learningRate: Float, seed: UInt64) throws {
        let optimizer = Adam(learningRate: learningRate)
        let epochs = max(1, (steps * batch + data.count - 1) / data.count)
        try forEachShuffledBatch(of: data, batch: batch, epochs: epochs, seed: seed) { step, images, labels in
            guard step < steps else { return }
            optimizer.learningRate = LearningRateSchedule.cosine(peak: learningRate, minimum: learningRate / 50, warmupSteps: 20, totalSteps: steps).rate(atStep: step)
            _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(images), labels: labels) }
        }
    }

    static func accuracy(_ model: Sequential, on data: LabeledImages) throws -> Double {
        model.setTraining(false)
        defer { model.setTraining(true) }
        return try classificationAccuracy(on: data) { model($0) }
    }

    /// Per unit of each gate, the share of `data`'s first 2,000 images on which it is active.
    static func firingRates(_ model: Sequential, gates: [Int], on data: LabeledImages) throws -> [[Double]] {
        let sample = data.selecting(Array(0..<min(2000, data.count)))
        var rates: [[Double]] = []
        try GradientRecording.withoutRecording {
            var h = model.layers[0](try sample.batch(Array(0..<sample.count), range: -1...1))
            for (index, layer) in model.layers.enumerated() where index > 0 {
                if gates.contains(index), let gate = layer as? NeuronGate {
                    // A unit is active when it passes something: gate on and a positive activation.
                    let relu = h.relu(), width = gate.threshold.shape[0]
                    let on = zip(gate.gate(relu).scalars, relu.scalars).map { $0 > 0.5 && $1 > 0 ? Float(1) : 0 }
                    rates.append((0..<width).map { unit in stride(from: unit, to: on.count, by: width).reduce(0.0) { $0 + Double(on[$1]) } / Double(sample.count) })
                }
                h = layer(h)
            }
        }
        return rates
    }

    public static func run(data: ShippedData, settings: Settings, progress: (String) -> Void = { _ in }) throws -> [Row] {
        let upright = try data.load(split: "train", digits: Set(0..<10)), uprightTest = try data.load(split: "t10k", digits: Set(0..<10))
        let rotatedTrain = rotated(upright, degrees: settings.angle), rotatedTest = rotated(uprightTest, degrees: settings.angle)
        // The foundation's data: half of the images upright, the other half rotated.
        let half = upright.count / 2
        let mix = LabeledImages(pixels: Array(upright.pixels[0..<(half * 784)]) + Array(rotatedTrain.pixels[(half * 784)...]),
                                labels: upright.labels, height: 28, width: 28)
        var rows: [Row] = []
        for seed in 0..<settings.seeds {
            let base = mlp(seed: UInt64(seed))
            try train(base, on: mix, steps: settings.pretrainSteps, batch: settings.batch, learningRate: 1e-3, seed: UInt64(seed))
            try base.freeze(names: base.namedParameters().map(\.name))
            rows.append(Row(seed: seed, method: "frozen", trainableParameters: 0, rotatedAccuracy: try accuracy(base, on: rotatedTest),
                            uprightAccuracy: try accuracy(base, on: uprightTest)))
            progress(String(format: "seed %d: frozen foundation %.1f%% rotated", seed, rows.last!.rotatedAccuracy * 100))

            // Gates in place of the two ReLUs, on the same (frozen) Linear layers.
            let gated = Sequential([base.layers[0], base.layers[1], NeuronGate(width: 256), base.layers[3], NeuronGate(width: 256), base.layers[5]])
            let before = try firingRates(gated, gates: [2, 4], on: rotatedTest)
            try train(gated, on: rotatedTrain, steps: settings.specializeSteps, batch: settings.batch, learningRate: settings.gateLearningRate,
                      seed: UInt64(seed) &+ 1)
            let trainable = gated.trainableParameters().reduce(0) { $0 + $1.parameter.value.count }
            let soft = try accuracy(gated, on: rotatedTest), softUpright = try accuracy(gated, on: uprightTest)
            for index in [2, 4] { (gated.layers[index] as! NeuronGate).hardened = true }
            let hard = try accuracy(gated, on: rotatedTest)
            let after = try firingRates(gated, gates: [2, 4], on: rotatedTest)
            let active = after.flatMap { $0 }.reduce(0, +) / Double(after.flatMap { $0 }.count)
            var deltas: [(unit: String, delta: Double)] = []
            for layer in 0..<after.count {
                for unit in 0..<after[layer].count { deltas.append(("\(layer == 0 ? 2 : 4):\(unit)", after[layer][unit] - before[layer][unit])) }
            }
            deltas.sort { abs($0.delta) > abs($1.delta) }
            let changes = deltas.prefix(10).map { String(format: "%@ %+.2f", $0.unit, $0.delta) }
            rows.append(Row(seed: seed, method: "gates", trainableParameters: trainable, rotatedAccuracy: soft, uprightAccuracy: softUpright,
                            hardenedRotatedAccuracy: hard, activeFraction: active, attributions: Array(changes)))
            progress(String(format: "seed %d: gates %.1f%% rotated (hardened %.1f%%), %d parameters, %.0f%% of units on", seed, soft * 100, hard * 100,
                            trainable, active * 100))

            // LoRA on the three Linear layers of a copy of the foundation.
            let adapted = mlp(seed: UInt64(seed))
            for ((_, target), (_, source)) in zip(adapted.namedParameters(), base.namedParameters()) { target.value = source.value }
            try adapted.addLowRankAdapters(matching: ["*"], configuration: LoRAConfiguration(rank: settings.loraRank, alpha: Float(settings.loraRank)),
                                           seed: UInt64(seed))
            try train(adapted, on: rotatedTrain, steps: settings.specializeSteps, batch: settings.batch, learningRate: settings.loraLearningRate,
                      seed: UInt64(seed) &+ 1)
            rows.append(Row(seed: seed, method: "lora r\(settings.loraRank)", trainableParameters: adapted.trainableParameters().reduce(0) { $0 + $1.parameter.value.count },
                            rotatedAccuracy: try accuracy(adapted, on: rotatedTest), uprightAccuracy: try accuracy(adapted, on: uprightTest)))
            progress(String(format: "seed %d: LoRA %.1f%% rotated, %d parameters", seed, rows.last!.rotatedAccuracy * 100, rows.last!.trainableParameters))
        }
        return rows
    }

    /// Means over seeds per method.
    public static func table(_ rows: [Row]) -> String {
        var lines = ["| method | trainable parameters | rotated 45° accuracy | hardened gates | upright accuracy | units on (hardened) | seeds |",
                     "| --- | --- | --- | --- | --- | --- | --- |"]
        var methods: [String] = []
        for row in rows where !methods.contains(row.method) { methods.append(row.method) }
        func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(max(v.count, 1)) }
        func sd(_ v: [Double]) -> Double { let m = mean(v); return (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(max(v.count - 1, 1))).squareRoot() }
        for method in methods {
            let cell = rows.filter { $0.method == method }
            let hard = cell.compactMap(\.hardenedRotatedAccuracy), active = cell.compactMap(\.activeFraction)
            lines.append(String(format: "| %@ | %d | %.1f%% ± %.1f | %@ | %.1f%% | %@ | %d |", method, cell[0].trainableParameters,
                                mean(cell.map(\.rotatedAccuracy)) * 100, sd(cell.map(\.rotatedAccuracy)) * 100,
                                hard.isEmpty ? "—" : String(format: "%.1f%%", mean(hard) * 100), mean(cell.map(\.uprightAccuracy)) * 100,
                                active.isEmpty ? "—" : String(format: "%.0f%%", mean(active) * 100), cell.count))
        }
        return lines.joined(separator: "\n")
    }
}
