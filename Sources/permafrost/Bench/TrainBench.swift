import ArgumentParser
import Foundation
import PermafrostNN
import PermafrostTensor

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

    @Option(help: "Model: mlp (784-1024-1024-10).") var model: String = "mlp"
    @Option(help: "Batch size.") var batch: Int = 256
    @Option(help: "Threads for us and for the peer.") var threads: Int = 2
    @Option(help: "Timed steps per configuration per round (after 2 warm-up steps).") var steps: Int = 10
    @Option(help: "Interleaved rounds.") var rounds: Int = 3
    @Option(help: "Only these configurations (comma-separated from 0%,50%,80%,probe).") var only: String?
    @Flag(help: "Skip the PyTorch peer.") var noPeer = false
    @Flag(help: "One JSON object per line.") var json = false

    static let configurations: [(name: String, fraction: Double?)] = [("0%", 0), ("50%", 0.5), ("80%", 0.8), ("probe", nil)]

    func run() throws {
        guard model == "mlp" else { throw ValidationError("--model must be mlp (other models arrive with their issues), got '\(model)'") }
        guard batch > 0, threads > 0, steps > 0, rounds > 0 else { throw ValidationError("--batch, --threads, --steps and --rounds must be positive") }
        Parallel.threadCount = threads
        let peer = noPeer ? nil : TorchPeer(script: PeerScripts.trainMLP)
        if !noPeer && peer == nil { progress("PyTorch peer unavailable: reporting ours only.") }
        let selected = only.map { Set($0.split(separator: ",").map(String.init)) }
        let configurations = Self.configurations.filter { selected?.contains($0.name) ?? true }
        guard !configurations.isEmpty else { throw ValidationError("--only names none of 0%, 50%, 80%, probe") }
        var ours: [String: [Double]] = [:], theirs: [String: [Double]] = [:], peaks: [String: Int] = [:]
        for round in 1...rounds {
            for (name, fraction) in configurations {
                progress("round \(round)/\(rounds)  mlp \(name) frozen")
                let (times, peak) = try measureOurs(fraction: fraction)
                ours[name, default: []] += times
                peaks[name] = max(peaks[name] ?? 0, peak)
                if let peer, let answer = peer.request("train \(fraction.map { String($0) } ?? "probe") \(batch) \(threads) \(steps)") {
                    theirs[name, default: []] += answer.split(separator: " ").compactMap { Double($0) }
                }
            }
        }
        let rows = configurations.map { name, _ in
            BenchRow(bench: "train", config: "model=mlp,frozen=\(name),batch=\(batch),threads=\(threads)",
                     ours: median(ours[name] ?? []) * 1000, peer: theirs[name].flatMap { $0.isEmpty ? nil : median($0) * 1000 },
                     unit: "ms/step", higherIsBetter: false)
        }
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

    /// Per-step seconds and the engine's peak tensor bytes.
    private func measureOurs(fraction: Double?) throws -> ([Double], Int) {
        var generator = PhiloxGenerator(seed: 1)
        let model = Sequential([Linear(784, 1024, generator: &generator), ReLU(), Linear(1024, 1024, generator: &generator), ReLU(),
                                Linear(1024, 10, generator: &generator)])
        let names = model.namedParameters().map(\.name)
        let frozenCount = fraction.map { Int(($0 * Double(names.count)).rounded()) } ?? names.count - 2
        try model.freeze(names: Array(names.prefix(frozenCount)))
        let x = Tensor(randomNormal: [batch, 784], generator: &generator)
        let labels = (0..<batch).map { $0 % 10 }
        let optimizer = Adam.adamW(learningRate: 1e-3)
        var times: [Double] = [], peak = 0
        for step in 0..<(steps + 2) {
            let start = monotonicSeconds()
            let result = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: labels) }
            if step >= 2 { times.append(monotonicSeconds() - start) }
            peak = max(peak, result.memory.peakBytes)
        }
        return (times, peak)
    }
}

extension PeerScripts {
    static let trainMLP = """
    import sys, time
    import torch
    print("ready", torch.__version__, flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        fraction, batch, threads, steps = parts[1], int(parts[2]), int(parts[3]), int(parts[4])
        torch.set_num_threads(threads)
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                    torch.nn.Linear(1024, 10))
        params = list(model.named_parameters())
        frozen = len(params) - 2 if fraction == "probe" else int(round(float(fraction) * len(params)))
        for i, (_, p) in enumerate(params):
            p.requires_grad_(i >= frozen)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        x = torch.randn(batch, 784)
        labels = torch.arange(batch) % 10
        times = []
        for step in range(steps + 2):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            optimizer.step()
            if step >= 2:
                times.append(time.perf_counter() - start)
        print(" ".join(repr(t) for t in times), flush=True)
    """
}
