import ArgumentParser
import Foundation
import PermafrostBench

/// `permafrost bench train`: a full training step at several freeze levels, ours vs PyTorch.
struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time a full training step (zero-grad, forward, cross-entropy, backward, AdamW) at 0/50/80% frozen and a linear probe, beside PyTorch.",
        discussion: """
        x% frozen means the first round(x·N) of the model's N tensors in state_dict order (the first layers), \
        as `requires_grad_(False)` does in the PyTorch peer, whose optimizer covers trainable tensors only. \
        "probe" trains the last Linear layer only. Targets: ratio ≤ 1.0 everywhere; our 80% step ≤ 0.5× our full step.
        """
    )

    @Option(help: "Model: mlp (784-1024-1024-10) or unet (the reference MNIST UNet2DModel, 28×28×1, epsilon-prediction MSE).")
    var model: String = "mlp"
    @Option(help: "Batch size (default: 256 for mlp, 32 for unet).") var batch: Int?
    @Option(help: "Threads for us and for the peer.") var threads: Int = 2
    @Option(help: "Timed steps per configuration per round (after 2 warm-up steps).") var steps: Int = 10
    @Option(help: "Interleaved rounds.") var rounds: Int = 3
    @Option(help: "Only these configurations (comma-separated from 0%,50%,80%,probe).") var only: String?
    @Flag(help: "Skip the PyTorch peer.") var noPeer = false
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        guard let workload = BenchWorkload(rawValue: model), workload == .mlp || workload == .unet else {
            throw ValidationError("--model must be mlp or unet, got '\(model)'")
        }
        let batch = self.batch ?? (workload == .mlp ? 256 : 32)
        guard batch > 0, threads > 0, steps > 0, rounds > 0 else { throw ValidationError("--batch, --threads, --steps and --rounds must be positive") }
        let peer = noPeer ? nil : TorchPeer(script: try PeerScripts.url("train_peer.py"), arguments: [model, try PeerScripts.referenceUNetConfig().path])
        if !noPeer && peer == nil { note("PyTorch peer unavailable: reporting ours only.") }
        let selected = only.map { Set($0.split(separator: ",").map(String.init)) }
        let configurations = TrainBenchmark.configurations.filter { selected?.contains($0.name) ?? true }
        guard !configurations.isEmpty else { throw ValidationError("--only names none of 0%, 50%, 80%, probe") }
        let (rows, peaks) = try TrainBenchmark.run(workload: workload, configurations: configurations, batch: batch, threads: threads,
                                                   steps: steps, rounds: rounds, peer: peer)
        BenchPrinter.print(rows, json: json, peerName: peer.map { "torch \($0.version)" })
        if !json {
            if let full = rows.first(where: { $0.config.contains("frozen=0%") }), let eighty = rows.first(where: { $0.config.contains("frozen=80%") }) {
                print(String(format: "our 80%%-frozen step / our full step = %.2f (target ≤ 0.5)", eighty.ours / full.ours))
            }
            for (name, _) in configurations {
                print("  engine peak tensor memory, \(name) frozen: \(String(format: "%.1f", Double(peaks[name] ?? 0) / 1_048_576)) MiB")
            }
        }
    }
}
