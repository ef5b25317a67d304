import ArgumentParser
import Foundation
import PermafrostBench

/// `permafrost bench freeze`: step time and peak memory of frozen fine-tuning, ours vs PyTorch.
struct FreezeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "freeze",
        abstract: "Step time and peak RSS at 0/50/80% frozen and linear probe for the MLP, CNN, UNet and a BERT-sized encoder, beside PyTorch.",
        discussion: """
        Each configuration runs in a fresh process (ours: `permafrost bench freeze-worker`; PyTorch: python3 with \
        `requires_grad_(False)` and an optimizer over trainable tensors only), so peak RSS is that run's own. \
        x% frozen = the first round(x·N) tensors in state_dict order; probe = all but the last two. \
        Rounds interleave ours and the peer's; medians are reported. Target: ratio ≤ 1.0 for frozen steps.
        """
    )
    @Option(help: "Models: mlp,cnn,unet,bert.") var models: String = "mlp,cnn,unet,bert"
    @Option(help: "Configurations: 0%,50%,80%,probe,lora (rank-8 adapters, unet and mlp).") var configs: String = "0%,50%,80%,probe"
    @Option(help: "Timed steps per run (after 2 warm-up steps).") var steps: Int = 5
    @Option(help: "Interleaved rounds.") var rounds: Int = 1
    @Option(help: "Threads.") var threads: Int = 2
    @Flag(help: "Skip the PyTorch peer.") var noPeer = false
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        let modelList = try models.split(separator: ",").map { name in
            guard let model = BenchWorkload(rawValue: String(name)) else { throw ValidationError("unknown model '\(name)'") }
            return model
        }
        let configList = configs.split(separator: ",").map(String.init)
        for c in configList where !FreezeBenchmark.configurations.contains(c) { throw ValidationError("unknown configuration '\(c)'") }
        let (rows, peerRan) = try FreezeBenchmark.run(models: modelList, configurations: configList, steps: steps, rounds: rounds,
                                                      threads: threads, peer: !noPeer, worker: CommandLine.arguments[0])
        BenchPrinter.print(rows, json: json, peerName: peerRan ? "torch" : nil)
    }
}

/// One configuration in a fresh process: prints `{"seconds": [...], "peak_rss_mb": …}`.
struct FreezeWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "freeze-worker", abstract: "(internal) one run of `bench freeze`.", shouldDisplay: false)
    @Option var model: String
    @Option var frozen: String
    @Option var steps: Int = 5
    @Option var threads: Int = 2

    func run() throws {
        guard let workload = BenchWorkload(rawValue: model) else { throw ValidationError("unknown model \(model)") }
        print(try FreezeBenchmark.worker(model: workload, frozen: frozen, steps: steps, threads: threads).jsonLine)
    }
}

/// `permafrost bench lora`: LoRA fine-tuning of the UNet beside PyTorch + PEFT (`bench freeze`'s `lora` configuration).
struct LoRABench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora", abstract: "Step time and peak RSS of rank-8 LoRA on the UNet's attention and resnet convolutions, beside PyTorch + PEFT.",
        discussion: "Each run in a fresh process, rounds interleaved, medians reported. Target: ratio ≤ 1.0 for time and peak RSS.")
    @Option(help: "Timed steps per run (after 2 warm-up steps).") var steps: Int = 5
    @Option(help: "Interleaved rounds.") var rounds: Int = 3
    @Option(help: "Threads.") var threads: Int = 2
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        let (rows, peerRan) = try FreezeBenchmark.run(models: [.unet], configurations: ["lora"], steps: steps, rounds: rounds, threads: threads,
                                                      peer: true, worker: CommandLine.arguments[0])
        BenchPrinter.print(rows, json: json, peerName: peerRan ? "torch + peft" : nil)
    }
}
