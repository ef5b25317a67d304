import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostTensor

/// `permafrost text`: a BERT model's everyday uses — sentence embeddings and tokenisation.
struct TextCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "text", abstract: "BERT models (e.g. all-MiniLM-L6-v2): embeddings and tokens.",
                                                    subcommands: [Finetune.self, Embed.self, Tokenize.self])

    struct Finetune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fine-tune a BERT model (mean pooling + a classifier) on labelled sentences; report test accuracy, step time and memory.",
            discussion: """
            Data: the shipped review snippets (Data/rt-snippets) unless --train/--test name TSV files (label<TAB>text, header line). \
            AdamW with linear warm-up (10%) and decay, as transformers' default. With --guard (from `permafrost guard learn` \
            on the same BERT folder) the guard's signature (against --publisher-key when given) and base digest must verify, \
            its tensors stay enforced-frozen, and at the end they are checked bit-identical to the base. --output writes the \
            fine-tuned encoder as a BERT folder (and the head as classifier.safetensors) for `guard verify --model`.

            Example: permafrost text finetune --model Models/all-MiniLM-L6-v2 --labels fresh,rotten --scheduler slimfit --report slim.json
            """)
        @Option(help: "A BERT folder (config.json, model.safetensors, tokenizer.json or vocab.txt).") var model: String
        @Option(help: "Labels to learn, in class order (rows with other labels are dropped).") var labels = "fresh,rotten,plot"
        @Option(help: "Training TSV (default: the shipped snippets' train split).") var train: String?
        @Option(help: "Test TSV (default: the shipped snippets' test split).") var test: String?
        @Option(help: "Epochs.") var epochs = 1
        @Option(help: "Batch size.") var batch = 32
        @Option(help: "Peak learning rate (AdamW).") var learningRate: Float = 5e-5
        @Option(help: "Tokens per sentence.") var maxLength = 128
        @Option(help: "Tensors to keep frozen: comma-separated globs (e.g. 'bert.embeddings.*,bert.encoder.layer.[012].*').") var freeze: String?
        @Flag(help: "Train the classifier head only.") var probe = false
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Write the JSON report here.") var report: String?
        @Option(help: "Signed guard manifest to enforce.") var `guard`: String?
        @Option(help: "Trusted publisher public key (pins the guard's signer).") var publisherKey: String?
        @Option(help: "Write the fine-tuned encoder (a BERT folder) and head here.") var output: String?
        @OptionGroup var freezing: FreezingOptions
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let wanted = labels.split(separator: ",").map(String.init)
            func load(_ path: String?, split: String) throws -> LabeledTexts {
                let all = try path.map { try LabeledTexts(contentsOf: URL(fileURLWithPath: $0)) } ?? dataOptions.shipped().loadTexts(split: split)
                let keep = all.labels.indices.filter { wanted.contains(all.labels[$0]) }
                return LabeledTexts(texts: keep.map { all.texts[$0] }, labels: keep.map { all.labels[$0] })
            }
            let trainSet = try load(train, split: "train"), testSet = try load(test, split: "test")
            guard trainSet.count >= batch else { throw ValidationError("only \(trainSet.count) training rows carry the labels \(wanted)") }
            let folder = URL(fileURLWithPath: model)
            let manifest = try self.guard.map { try GuardManifest.load(from: URL(fileURLWithPath: $0)) }
            let fineTune: GuardedTextFineTune
            do {
                fineTune = try GuardedTextFineTune(baseDirectory: folder, labels: wanted, manifest: manifest,
                                                   trustedPublisherKey: try publisherKey.map { try GuardKeys.publicKey(from: URL(fileURLWithPath: $0)) }, seed: seed)
            } catch let error as GuardedFineTuneError { throw CLIError("refusing to fine-tune: \(error.description)") }
            var settings = TextFineTuneSettings()
            (settings.epochs, settings.batch, settings.learningRate, settings.maxLength, settings.seed) = (epochs, batch, learningRate, maxLength, seed)
            (settings.freeze, settings.linearProbe) = (freeze.map { $0.split(separator: ",").map(String.init) } ?? [], probe)
            (settings.slimFitBudget, settings.activationCompression) = (try freezing.slimFitBudget(), freezing.activationCompression)
            let bar = ProgressBar(total: epochs * (trainSet.count / batch), label: "text finetune")
            var result = try fineTune.run(tokenizer: try WordPieceTokenizer(directory: folder), train: trainSet, test: testSet,
                                          labels: wanted, settings: settings) { step, _, loss in bar.update(step, detail: String(format: "loss %.4f", loss)) }
            result.command = "permafrost " + CommandLine.arguments.dropFirst().joined(separator: " ")
            print(String(format: "test accuracy %.2f%% on %d sentences; %.3f s/step; peak RSS %.0f MB; %d trainable parameters", result.testAccuracy * 100,
                         result.testSentences, result.medianStepSeconds, result.peakRSSMegabytes, result.trainableParameters))
            if let guarded = result.guardedTensors { print("guard: \(guarded) guarded tensors bit-identical to the base") }
            if let output { try fineTune.save(to: URL(fileURLWithPath: output), baseDirectory: folder) }
            if let report { try AtomicFile.writeJSON(result, to: URL(fileURLWithPath: report)) }
        }
    }

    struct Embed: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read lines on stdin; print one JSON array per line: the mean-pooled, L2-normalised sentence embedding.",
            discussion: "Example: echo 'A fine film.' | permafrost text embed --model Models/all-MiniLM-L6-v2")
        @Option(help: "A BERT folder (config.json, model.safetensors, tokenizer.json or vocab.txt).") var model: String
        @Option(help: "Tokens per sentence, the special ones included.") var maxLength = 256
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let folder = URL(fileURLWithPath: model)
            let bert = try BertModel(directory: folder)
            bert.setTraining(false)
            var tokenizer = try WordPieceTokenizer(directory: folder)
            (tokenizer.maxLength, tokenizer.padToLength) = (min(maxLength, bert.config.maxPositions), nil)
            while let line = readLine() {
                let embedding = GradientRecording.withoutRecording { bert.meanPooled(TokenBatch([tokenizer.encode(line)])) }.scalars
                let norm = max(embedding.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
                print("[" + embedding.map { String($0 / norm) }.joined(separator: ",") + "]")
            }
        }
    }

    struct Tokenize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read lines on stdin; print one JSON object per line with input_ids, attention_mask and token_type_ids.",
            discussion: "Example: echo 'Hello, world!' | permafrost text tokenize --model Models/all-MiniLM-L6-v2 --max-length 16")
        @Option(help: "A folder with tokenizer.json or vocab.txt.") var model: String
        @Option(help: "Truncate (and with --pad, pad) to this many tokens (default: the tokenizer's own settings).") var maxLength: Int?
        @Flag(help: "Pad to --max-length.") var pad = false

        func run() throws {
            var tokenizer = try WordPieceTokenizer(directory: URL(fileURLWithPath: model))
            if let maxLength { tokenizer.maxLength = maxLength; tokenizer.padToLength = pad ? maxLength : nil }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            while let line = readLine() { print(String(decoding: try encoder.encode(tokenizer.encode(line)), as: UTF8.self)) }
        }
    }
}
