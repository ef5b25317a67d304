import ArgumentParser
import Foundation
import PermafrostIO
import PermafrostModels

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
        @Flag(help: "Add a last class, \"none of these\", trained on smoothed noise and shuffled image patches.") var noneClass = false
        @Option(help: "Epochs over the training images.") var epochs: Int = 3
        @Option(help: "Batch size.") var batch: Int = 64
        @Option(help: "Learning rate (Adam).") var learningRate: Float = 1e-3
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let fashionClasses = Set(try fashion.map { try parseRanges($0, name: "--fashion") } ?? [])
            let classes = (fashionClasses.isEmpty ? 10 : 13) + (noneClass ? 1 : 0)
            let model = ImageClassifier(classes: classes, seed: seed)
            func fit<Train: LabeledImageSource, Test: LabeledImageSource>(_ train: Train, _ test: Test) throws -> (Double, Int) {
                let bar = ProgressBar(total: epochs * (train.count / batch), label: "classifier")
                try model.train(on: train, epochs: epochs, batch: batch, learningRate: learningRate, seed: seed) { bar.update($0, detail: String(format: "loss %.4f", $1)) }
                return (try model.accuracy(on: test), test.count)
            }
            let data = try dataOptions.shipped(), digits = Set(0..<10)
            let (accuracy, tested): (Double, Int)
            if noneClass {
                model.noneClass = classes - 1
                (accuracy, tested) = try fit(NoneOfTheseImages.adding(to: try data.load(split: "train", digits: digits, fashion: fashionClasses), label: classes - 1, seed: seed),
                                             NoneOfTheseImages.adding(to: try data.load(split: "t10k", digits: digits, fashion: fashionClasses), label: classes - 1, seed: seed + 1))
            } else {
                (accuracy, tested) = try fit(try data.loadOnDisk(split: "train", digits: digits, fashion: fashionClasses), try data.loadOnDisk(split: "t10k", digits: digits, fashion: fashionClasses))
            }
            try model.save(to: URL(fileURLWithPath: output))
            print(String(format: "test accuracy %.2f%% on %d images (%d classes); saved %@", accuracy * 100, tested, classes, output))
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
        @Flag(help: "Let SlimFit freeze the new head too (by default it always trains, as in SlimFit's reference code).") var freezeHead = false
        @Option(help: "Epochs over the 13-class training images.") var epochs: Int = 1
        @Option(help: "Batch size.") var batch: Int = 64
        @Option(help: "Learning rate (Adam).") var learningRate: Float = 5e-4
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Write a JSON report here.") var report: String?
        @OptionGroup var freezing: FreezingOptions
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let model: ImageClassifier
            do { model = try ImageClassifier.grown(from: URL(fileURLWithPath: from), seed: seed) } catch let error as ClassifierTrainingError {
                throw ValidationError("--from: \(error.description)")
            }
            // Both sets stay on disk and are read a batch at a time: held as bytes they were 26.5 MB
            // of every step's resident memory, more than SlimFit's tensors (docs/results/slimfit.md).
            let train = try dataOptions.shipped().loadOnDisk(split: "train", digits: Set(0..<10), fashion: [1, 7, 8])
            let test = try dataOptions.shipped().loadOnDisk(split: "t10k", digits: Set(0..<10), fashion: [1, 7, 8])
            var settings = ClassifierFineTuneSettings()
            settings.epochs = epochs; settings.batch = batch; settings.learningRate = learningRate; settings.seed = seed
            settings.freezeHead = freezeHead
            settings.activationCompression = freezing.activationCompression
            settings.slimFitBudget = try freezing.slimFitBudget()
            let bar = ProgressBar(total: epochs * (train.count / batch), label: "finetune \(freezing.scheduler)")
            var summary = try model.fineTune(on: train, testingOn: test, settings: settings) { step, _, loss in
                bar.update(step, detail: String(format: "loss %.4f", loss))
            }
            summary.command = "permafrost " + CommandLine.arguments.dropFirst().joined(separator: " ")
            print(summary)
            if let report { try AtomicFile.writeJSON(summary, to: URL(fileURLWithPath: report)) }
        }
    }
}
