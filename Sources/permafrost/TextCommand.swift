import ArgumentParser
import Foundation
import PermafrostModels
import PermafrostTensor

/// `permafrost text`: a BERT model's everyday uses — sentence embeddings and tokenisation.
struct TextCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "text", abstract: "BERT models (e.g. all-MiniLM-L6-v2): embeddings and tokens.",
                                                    subcommands: [Embed.self, Tokenize.self])

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
            (tokenizer.maxLength, tokenizer.padToLength) = (maxLength, nil)
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
