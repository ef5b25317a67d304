import ArgumentParser
import Foundation
import PermafrostBench

/// `permafrost bench text`: a pretrained BERT's fine-tuning step and its embeddings, beside PyTorch + transformers.
struct TextBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text",
        abstract: "Step time and peak RSS of fine-tuning all-MiniLM-L6-v2 (batch 32 × 128 tokens) at 0/50/80% frozen and linear probe, beside PyTorch; embedding parity with sentence-transformers.",
        discussion: """
        Each configuration runs in a fresh process (ours: `permafrost bench text-worker`; the peer: \
        Scripts/bench/text_peer.py with transformers), rounds interleaved, medians reported. Both train mean \
        pooling + a Linear head with AdamW on the first 32 shipped review snippets padded to 128 tokens; x% frozen \
        = the first round(x·N) tensors in state_dict order (the bench checks both froze as many); probe = all but \
        the head. Then both embed the first 100 shipped test sentences and the row \
        `metric=embedding_cosine_min_vs_sentence_transformers` states the smallest cosine between the two. \
        Target: ratio ≤ 1.0 for time and peak RSS; cosine ≥ 0.9999. Get the model with `Scripts/get-model minilm`.
        """
    )
    @Option(help: "A BERT folder (config.json, model.safetensors, tokenizer.json or vocab.txt).") var model: String = "Models/all-MiniLM-L6-v2"
    @Option(help: "Configurations: 0%,50%,80%,probe.") var configs: String = "0%,50%,80%,probe"
    @Option(help: "Timed steps per run (after 2 warm-up steps).") var steps: Int = 5
    @Option(help: "Interleaved rounds.") var rounds: Int = 3
    @Option(help: "Threads.") var threads: Int = 2
    @Option(help: "Tokens per sentence (padded or truncated).") var length: Int = 128
    @Option(help: "Sentences whose embeddings are compared (0: no parity row).") var paritySentences: Int = 100
    @Flag(help: "Skip the PyTorch peer.") var noPeer = false
    @Flag(help: "One JSON object per line.") var json = false
    @OptionGroup var dataOptions: DataOptions

    func run() throws {
        let folder = URL(fileURLWithPath: model)
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path) else {
            throw ValidationError("\(model)/model.safetensors is missing: fetch the model with `Scripts/get-model minilm`")
        }
        let configList = configs.split(separator: ",").map(String.init)
        for c in configList where !TextBenchmark.configurations.contains(c) { throw ValidationError("unknown configuration '\(c)'") }
        let data = try dataOptions.shipped()
        let train = try data.loadTexts(split: "train"), test = try data.loadTexts(split: "test")
        let inputs = try TextBenchmark.Inputs(trainTexts: train.texts, labelNames: train.labels, testTexts: test.texts,
                                              batch: 32, paritySentences: paritySentences, length: length)
        let (rows, peerRan) = try TextBenchmark.run(model: folder, inputs: inputs, configurations: configList, steps: steps, rounds: rounds,
                                                    threads: threads, peer: !noPeer, worker: CommandLine.arguments[0])
        BenchPrinter.print(rows, json: json, peerName: peerRan ? "torch + transformers" : nil)
    }
}

/// One configuration of `bench text` in a fresh process: prints `{"seconds": [...], "peak_rss_mb": …, "frozen_tensors": …}`.
struct TextWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "text-worker", abstract: "(internal) one run of `bench text`.", shouldDisplay: false)
    @Option var model: String
    @Option var inputs: String
    @Option var frozen: String
    @Option var steps: Int = 5
    @Option var threads: Int = 2

    func run() throws {
        let decoded = try JSONDecoder().decode(TextBenchmark.Inputs.self, from: Data(contentsOf: URL(fileURLWithPath: inputs)))
        print(try TextBenchmark.worker(model: URL(fileURLWithPath: model), inputs: decoded, frozen: frozen, steps: steps, threads: threads).jsonLine)
    }
}
