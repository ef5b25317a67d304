import ArgumentParser
import Foundation
import PermafrostDiffusion
import PermafrostEval
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// `permafrost pretrain`: train a class-conditional diffusion UNet from scratch.
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pretrain a class-conditional diffusion UNet (diffusers UNet2DModel) on the shipped MNIST digits.",
        discussion: """
        Epsilon-prediction MSE, AdamW with warm-up and cosine decay, EMA of the weights, a checkpoint every \
        --checkpoint-every steps into OUTPUT/checkpoint (resume with --resume). The result is a diffusers \
        save_pretrained folder (OUTPUT/config.json + OUTPUT/diffusion_pytorch_model.safetensors, EMA weights).

        Example (about 25 minutes on 2 cores; 93.7% of its samples are recognised with --eta 1):
          permafrost pretrain --output runs/mnist-unet --steps 2000
        Then: permafrost sample --model runs/mnist-unet --output samples.png
        """
    )

    @Option(help: "Output folder.") var output: String
    @Option(help: "Model: reference (≈1.6 M parameters, 16 class slots) or tiny (for tests).") var config: String = "reference"
    @Option(help: "MNIST digits to train on, e.g. 0-9 or 0-5 (their slots are the digits).") var digits: String = "0-9"
    @Option(help: "Fashion-MNIST classes to add, from 1,7,8 (slots 10–12).") var fashion: String?
    @Option(help: "Training steps.") var steps: Int = 2000
    @Option(help: "Batch size.") var batch: Int = 32
    @Option(help: "Peak learning rate.") var learningRate: Float = 1e-3
    @Option(help: "EMA decay (0 disables EMA).") var ema: Float = 0.999
    @Option(help: "Checkpoint every N steps.") var checkpointEvery: Int = 500
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Flag(help: "Resume from OUTPUT/checkpoint (--steps may extend the run).") var resume = false
    @Flag(help: "No progress output.") var quiet = false
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        guard steps > 0, batch > 0, checkpointEvery > 0, learningRate > 0 else { throw ValidationError("--steps, --batch, --checkpoint-every and --learning-rate must be positive") }
        let out = URL(fileURLWithPath: output)
        let data = try dataOptions.load(split: "train", digits: Set(try parseRanges(digits, name: "--digits")),
                                        fashion: Set(try fashion.map { try parseRanges($0, name: "--fashion") } ?? []))
        let checkpoint = out.appendingPathComponent("checkpoint")
        let trainer: DiffusionTrainer
        if resume {
            trainer = try DiffusionTrainer.resume(from: checkpoint, data: data, steps: steps)
            if !quiet { note("resuming at step \(trainer.step) of \(steps)") }
        } else {
            let modelConfig: UNet2DConfig
            switch config {
            case "reference": modelConfig = .mnistReference
            case "tiny":
                var tiny = UNet2DConfig.mnistReference
                tiny.blockOutChannels = [16, 32]
                tiny.layersPerBlock = 1
                tiny.downBlockTypes = ["DownBlock2D", "AttnDownBlock2D"]
                tiny.upBlockTypes = ["AttnUpBlock2D", "UpBlock2D"]
                tiny.normNumGroups = 4
                modelConfig = tiny
            default: throw ValidationError("--config must be reference or tiny, got '\(config)'")
            }
            var options = DiffusionTrainingOptions()
            options.steps = steps
            options.batchSize = batch
            options.learningRate = learningRate
            options.warmupSteps = min(200, steps / 10)
            options.emaDecay = ema > 0 ? ema : nil
            options.checkpointEvery = checkpointEvery
            options.seed = seed
            trainer = DiffusionTrainer(model: try UNet2DModel(config: modelConfig, seed: seed), data: data, options: options)
        }
        if !quiet { note("pretraining \(trainer.model.parameterCount) parameters on \(data.count) images (classes \(Set(data.labels).sorted()))") }
        let bar = ProgressBar(total: steps, label: "pretrain", initial: trainer.step)
        bar.quiet = quiet
        var lastMemory: MemoryReport?
        try trainer.train(checkpointDirectory: checkpoint) { p in
            lastMemory = p.memory
            bar.update(p.step, detail: String(format: "loss %.4f", p.averageLoss))
        }
        try trainer.averagedModel().save(directory: out, metadata: ["permafrost.steps": String(trainer.step)])
        if !quiet {
            note("saved \(out.path) (EMA weights, diffusers format); training state in \(checkpoint.path)")
            if let lastMemory { note("memory per step: \(lastMemory)") }
        }
    }
}

/// `permafrost sample`: DDIM samples as a PNG grid.
struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate images with DDIM from a saved UNet and write them as a PNG grid (one row per class).",
        discussion: "Example: permafrost sample --model runs/mnist-unet --classes 0-9 --per-class 8 --output samples.png"
    )

    @Option(help: "A diffusers UNet2DModel folder.") var model: String
    @Option(help: "Class slots, e.g. 0-9 or 10,11,12.") var classes: String = "0-9"
    @Option(help: "Images per class.") var perClass: Int = 8
    @Option(help: "DDIM steps.") var steps: Int = 50
    @Option(help: "DDIM eta (0 deterministic, 1 DDPM-like).") var eta: Float = 0
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output PNG.") var output: String = "samples.png"
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        guard perClass > 0, steps > 0 else { throw ValidationError("--per-class and --steps must be positive") }
        let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
        let slots = try parseRanges(classes, name: "--classes")
        if let limit = unet.config.numClassEmbeds, let bad = slots.first(where: { $0 < 0 || $0 >= limit }) {
            throw ValidationError("class slot \(bad) is outside the model's \(limit) slots")
        }
        let requested = slots.flatMap { Array(repeating: $0, count: perClass) }
        let bar = ProgressBar(total: (requested.count + 63) / 64 * steps, label: "sample")
        let images = DiffusionSampler.sample(model: unet, classes: requested, steps: steps, eta: eta, seed: seed) { done, _ in bar.update(done) }
        try ImageGrid.write(images, columns: perClass, to: URL(fileURLWithPath: output))
        print("wrote \(output): \(slots.count) classes × \(perClass) images")
    }
}

/// `permafrost evaluate`: recognition rate and FID of generated images.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure a UNet's samples with the evaluation classifier: recognition rate per class and FID against real test images.",
        discussion: "Example: permafrost evaluate --model runs/mnist-unet --classifier runs/classifier.safetensors --classes 0-9"
    )

    @Option(help: "A diffusers UNet2DModel folder.") var model: String
    @Option(help: "Classifier from `permafrost classifier train`.") var classifier: String
    @Option(help: "Class slots to generate (0–9 digits, 10–12 Fashion trouser/sneaker/bag).") var classes: String = "0-9"
    @Option(help: "Samples per class (the protocols use ≥ 200).") var perClass: Int = 200
    @Option(help: "DDIM steps.") var steps: Int = 25
    @Option(help: "DDIM eta (0 deterministic, 1 DDPM-like).") var eta: Float = 0
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Also write a PNG grid of the first 10 samples per class here.") var grid: String?
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
        let judge = try ImageClassifier.load(from: URL(fileURLWithPath: classifier))
        let slots = try parseRanges(classes, name: "--classes")
        let requested = slots.flatMap { Array(repeating: $0, count: perClass) }
        let bar = ProgressBar(total: (requested.count + 63) / 64 * steps, label: "sample")
        let images = DiffusionSampler.sample(model: unet, classes: requested, steps: steps, eta: eta, seed: seed) { done, _ in bar.update(done) }
        let digits = Set(slots.filter { $0 < 10 }), fashion = Set(DataOptions.fashionSlots.filter { slots.contains($0.value) }.map(\.key))
        let real = try dataOptions.load(split: "t10k", digits: digits, fashion: fashion)
        let quality = try QualityEvaluation.evaluate(classifier: judge, generated: images, requested: requested,
                                                     real: real.batch(Array(0..<real.count)))
        let predicted = judge.predict(images)
        var perClassRates: [String: Double] = [:]
        for slot in slots {
            let idx = requested.indices.filter { requested[$0] == slot }
            perClassRates[String(slot)] = Double(idx.filter { predicted[$0] == slot }.count) / Double(idx.count)
        }
        if let grid {
            let firsts = slots.flatMap { slot in requested.indices.filter { requested[$0] == slot }.prefix(10) }
            try ImageGrid.write(Tensor.concatenate(firsts.map { images.slice(alongAxis: 0, from: $0, to: $0 + 1) }, alongAxis: 0),
                                columns: min(10, perClass), to: URL(fileURLWithPath: grid))
        }
        if json {
            let object: [String: Any] = ["recognition_rate": quality.recognitionRate, "fid": quality.fid ?? NSNull(), "samples": quality.samples,
                                         "per_class": perClassRates]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(String(format: "recognition rate %.1f%% over %d samples, FID %.3f (classifier features, vs %d real test images)",
                         quality.recognitionRate * 100, quality.samples, quality.fid ?? .nan, real.count))
            for slot in slots { print(String(format: "  class %2d: %.1f%%", slot, perClassRates[String(slot)]! * 100)) }
        }
    }
}

/// `permafrost classifier train`: the evaluation classifier.
struct ClassifierCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "classifier", abstract: "The evaluation classifier (recognition rate, FID features).",
                                                    subcommands: [Train.self, Finetune.self])

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train the evaluation CNN on the shipped MNIST digits (and optionally Fashion-MNIST trouser/sneaker/bag as classes 10–12).",
            discussion: "Example: permafrost classifier train --output runs/classifier.safetensors --fashion 1,7,8"
        )

        @Option(help: "Output .safetensors file.") var output: String
        @Option(help: "Fashion-MNIST classes to include, from 1,7,8 (as classes 10–12).") var fashion: String?
        @Option(help: "Epochs over the training images.") var epochs: Int = 3
        @Option(help: "Batch size.") var batch: Int = 64
        @Option(help: "Learning rate (Adam).") var learningRate: Float = 1e-3
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let fashionClasses = Set(try fashion.map { try parseRanges($0, name: "--fashion") } ?? [])
            let train = try dataOptions.loadOnDisk(split: "train", digits: Set(0..<10), fashion: fashionClasses)
            let test = try dataOptions.loadOnDisk(split: "t10k", digits: Set(0..<10), fashion: fashionClasses)
            let classes = fashionClasses.isEmpty ? 10 : 13
            let model = ImageClassifier(classes: classes, seed: seed)
            let optimizer = Adam(learningRate: learningRate)
            let stepsPerEpoch = train.count / batch
            let total = epochs * stepsPerEpoch
            let bar = ProgressBar(total: total, label: "classifier")
            var recent: [Float] = []
            try forEachShuffledBatch(of: train, batch: batch, epochs: epochs, seed: seed) { step, images, labels in
                optimizer.learningRate = LearningRateSchedule.cosine(peak: learningRate, minimum: learningRate / 50, warmupSteps: 50, totalSteps: total).rate(atStep: step)
                let result = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model.logits(images), labels: labels) }
                recent.append(result.loss)
                if recent.count > 50 { recent.removeFirst() }
                bar.update(step + 1, detail: String(format: "loss %.4f", recent.reduce(0, +) / Float(recent.count)))
            }
            let accuracy = try model.accuracy(on: test)
            try model.save(to: URL(fileURLWithPath: output))
            print(String(format: "test accuracy %.2f%% on %d images (%d classes); saved %@", accuracy * 100, test.count, classes, output))
        }
    }
}

extension ClassifierCommand {
    /// SlimFit's classifier experiment: a digits classifier adapted to a new domain (digits plus
    /// Fashion-MNIST trouser/sneaker/bag as classes 10–12), fully or with dynamic freezing.
    struct Finetune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fine-tune a 10-class digits classifier to 13 classes (digits + Fashion 1,7,8), optionally with SlimFit; report accuracy, time and memory.",
            discussion: """
            The head grows from 10 to 13 outputs (the digit rows are kept, the new rows start at zero). Run it once \
            with --scheduler none and once with --scheduler slimfit, each in a fresh process, and compare the \
            reports (docs/results/slimfit.md).

            Example: permafrost classifier finetune --from runs/classifier-digits.safetensors --scheduler slimfit --freeze-budget 0.8 --report slim.json
            """
        )
        @Option(help: "A 10-class classifier from `permafrost classifier train`.") var from: String
        @Option(help: "Dynamic freezing: none or slimfit.") var scheduler: String = "none"
        @Option(help: "SlimFit: fraction of candidate tensors frozen at each step.") var freezeBudget: Double = 0.8
        @Flag(help: "Keep static activations (activation functions', frozen norms') in 8 bits, as SlimFit does.") var compressActivations = false
        @Flag(help: "Also keep the inputs trainable convolutions and matmuls save for their weight gradients in 8 bits (implies --compress-activations).") var compressWeightInputs = false
        @Flag(help: "Let SlimFit freeze the new head too (by default it always trains, as in SlimFit's reference code).") var freezeHead = false
        @Option(help: "Epochs over the 13-class training images.") var epochs: Int = 1
        @Option(help: "Batch size.") var batch: Int = 64
        @Option(help: "Learning rate (Adam).") var learningRate: Float = 5e-4
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Write a JSON report here.") var report: String?
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        /// The 13-class model initialised from a 10-class checkpoint. The source model goes out of
        /// scope here: held through training, its 1.9 MB of weights would count in every step's peak.
        static func grownClassifier(from url: URL, seed: UInt64) throws -> ImageClassifier {
            let source = try ImageClassifier.load(from: url)
            guard source.classes == 10 else { throw ValidationError("--from must be a 10-class digits classifier, this one has \(source.classes) classes") }
            let model = ImageClassifier(classes: 13, seed: seed)
            for (name, parameter) in model.namedParameters() {
                guard let old = source.parameter(named: name)?.value else {
                    throw ValidationError("--from: the checkpoint has no tensor '\(name)' (is it an ImageClassifier?)")
                }
                if old.shape == parameter.shape { parameter.value = old; continue }
                // The head: digit rows copied, the three new rows zero.
                var grown = Tensor.zeros(parameter.shape)
                let count = old.count
                old.withUnsafeBufferPointer { o in grown.withUnsafeMutableBufferPointer { g in for i in 0..<count { g[i] = o[i] } } }
                parameter.value = grown
            }
            return model
        }

        func run() throws {
            try engine.apply()
            let model = try Self.grownClassifier(from: URL(fileURLWithPath: from), seed: seed)
            // Both sets stay on disk and are read a batch at a time: held as bytes they were 26.5 MB
            // of every step's resident memory, more than SlimFit's tensors (docs/results/slimfit.md).
            let train = try dataOptions.loadOnDisk(split: "train", digits: Set(0..<10), fashion: [1, 7, 8])
            let test = try dataOptions.loadOnDisk(split: "t10k", digits: Set(0..<10), fashion: [1, 7, 8])
            let freezer: FreezeScheduler?
            switch scheduler {
            case "none": freezer = nil
            case "slimfit":
                guard freezeBudget >= 0, freezeBudget < 1 else { throw ValidationError("--freeze-budget must be in [0, 1)") }
                let head = Set(model.namedParameters().map(\.name).filter { $0.hasPrefix("head.") })
                freezer = SlimFitScheduler(budget: freezeBudget, alwaysTrained: freezeHead ? [] : head)
            default: throw ValidationError("--scheduler must be none or slimfit, got '\(scheduler)'")
            }
            let optimizer = Adam(learningRate: learningRate)
            let stepsPerEpoch = train.count / batch, total = epochs * stepsPerEpoch
            MemoryStatistics.returnFreeMemoryToSystem()
            let loadingRSS = peakResidentMegabytes()
            let bar = ProgressBar(total: total, label: "finetune \(scheduler)")
            var times: [Double] = [], peak = 0, activations = 0, gradients = 0, state = 0, frozenShare: [Double] = []
            let parameterTotal = Double(model.parameterCount)
            try forEachShuffledBatch(of: train, batch: batch, epochs: epochs, seed: seed) { step, images, labels in
                optimizer.learningRate = LearningRateSchedule.cosine(peak: learningRate, minimum: learningRate / 20, warmupSteps: 20, totalSteps: total).rate(atStep: step)
                let start = Date()
                if let freezer { try model.applySchedule(freezer, step: step, optimizer: optimizer) }
                let result = try ActivationCompression.with(activationCompressionMode(compressActivations, weightInputs: compressWeightInputs)) {
                    try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model.logits(images), labels: labels) }
                }
                times.append(Date().timeIntervalSince(start))
                // The first steps train everything (SlimFit's scores start high); the steady state is what a run pays.
                if step >= 10 {
                    peak = max(peak, result.memory.peakBytes); activations = max(activations, result.memory.activationBytes)
                    gradients = max(gradients, result.memory.gradientBytes); state = max(state, result.memory.optimizerStateBytes)
                }
                frozenShare.append(Double(model.frozenParameters().reduce(0) { $0 + $1.parameter.value.count }) / parameterTotal)
                bar.update(step + 1, detail: String(format: "loss %.4f", result.loss))
            }
            let accuracy = try model.accuracy(on: test)
            let rss = peakResidentMegabytes()
            let summary: [String: Any] = [
                "scheduler": scheduler, "freeze_budget": scheduler == "slimfit" ? freezeBudget : 0, "compress_activations": compressActivations || compressWeightInputs, "compress_weight_inputs": compressWeightInputs, "head_frozen_by_slimfit": freezeHead,
                "epochs": epochs, "steps": total, "batch": batch, "test_accuracy": accuracy, "test_images": test.count,
                "median_step_seconds": median(Array(times.dropFirst(10))), "mean_frozen_parameter_share": frozenShare.reduce(0, +) / Double(max(frozenShare.count, 1)),
                "peak_tensor_bytes": peak, "activation_bytes": activations, "gradient_bytes": gradients, "optimizer_state_bytes": state,
                "peak_rss_mb": rss, "peak_rss_before_training_mb": loadingRSS, "command": "permafrost " + CommandLine.arguments.dropFirst().joined(separator: " "),
            ]
            print(String(format: "test accuracy %.2f%% (13 classes); median step %.2f ms; peak tensors %.1f MiB (activations %.1f, gradients %.2f, optimizer %.2f); peak RSS %.0f MiB",
                         accuracy * 100, median(Array(times.dropFirst(10))) * 1000, Double(peak) / 1_048_576, Double(activations) / 1_048_576,
                         Double(gradients) / 1_048_576, Double(state) / 1_048_576, rss))
            if let report {
                try AtomicFile.write(try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys]), to: URL(fileURLWithPath: report))
            }
        }
    }
}

/// Calls `body(step, images, labels)` for every full batch of `epochs` shuffled passes over `data`.
func forEachShuffledBatch<Source: LabeledImageSource>(of data: Source, batch: Int, epochs: Int, seed: UInt64,
                          _ body: (Int, Tensor, [Int]) throws -> Void) throws {
    var generator = PhiloxGenerator(seed: seed)
    var step = 0
    for _ in 0..<epochs {
        var order = Array(0..<data.count)
        order.shuffle(using: &generator)
        for b in 0..<(data.count / batch) {
            let indices = Array(order[(b * batch)..<((b + 1) * batch)])
            try body(step, try data.batch(indices, range: -1...1), indices.map { data.labels[$0] })
            step += 1
        }
    }
}

/// `permafrost unet forward`: run a saved UNet on tensors from a file.
struct UNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unet", abstract: "Run diffusers UNet2DModel folders.", subcommands: [Forward.self])

    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a saved UNet2DModel on `sample`, `timestep` (int64 or float) and optional `class_labels` from a safetensors file; write `sample`.",
            discussion: "Example: permafrost unet forward --model my-unet --inputs in.safetensors --output out.safetensors"
        )
        @Option(help: "A diffusers UNet2DModel folder.") var model: String
        @Option(help: "Input .safetensors with sample [B,C,H,W], timestep [B] or [] and optional class_labels [B].") var inputs: String
        @Option(help: "Output .safetensors (tensor `sample`).") var output: String
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
            let file: SafetensorsFile
            do { file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: inputs)) } catch { throw CLIError("\(inputs): \(error)") }
            let sample = try file.tensor(named: "sample")
            guard sample.rank == 4, sample.shape[1] == unet.config.inChannels else {
                throw CLIError("`sample` must be [B, \(unet.config.inChannels), H, W], got \(sample.shape)")
            }
            let entry = try file.entry(named: "timestep")
            let timesteps: [Float] = entry.dtype.isFloatingPoint ? try file.tensor(named: "timestep").scalars : try file.int64s(named: "timestep").map(Float.init)
            guard timesteps.count == 1 || timesteps.count == sample.shape[0] else {
                throw CLIError("`timestep` must hold 1 or \(sample.shape[0]) values, got \(timesteps.count)")
            }
            var labels: [Int]?
            if file.names.contains("class_labels") {
                labels = try file.int64s(named: "class_labels").map { Int($0) }
                guard let limit = unet.config.numClassEmbeds else { throw CLIError("`class_labels` given, but the model has no class embedding") }
                guard labels!.count == sample.shape[0], labels!.allSatisfy({ $0 >= 0 && $0 < limit }) else {
                    throw CLIError("`class_labels` must hold \(sample.shape[0]) values in 0..<\(limit)")
                }
            } else if unet.config.numClassEmbeds != nil {
                throw CLIError("the model is class-conditional: the inputs need `class_labels`")
            }
            let result = GradientRecording.withoutRecording { unet(sample, timesteps: timesteps, classLabels: labels) }
            try SafetensorsWriter.write([(name: "sample", tensor: result)], to: URL(fileURLWithPath: output))
            print("wrote \(output): sample \(result.shape)")
        }
    }
}
