import ArgumentParser
import Foundation
import PermafrostDiffusion
import PermafrostModels
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

    @Option(help: "Model: mlp (784-1024-1024-10) or unet (the reference MNIST UNet2DModel, 28×28×1, epsilon-prediction MSE).")
    var model: String = "mlp"
    @Option(help: "Batch size (default: 256 for mlp, 32 for unet).") var batch: Int?
    @Option(help: "Threads for us and for the peer.") var threads: Int = 2
    @Option(help: "Timed steps per configuration per round (after 2 warm-up steps).") var steps: Int = 10
    @Option(help: "Interleaved rounds.") var rounds: Int = 3
    @Option(help: "Only these configurations (comma-separated from 0%,50%,80%,probe).") var only: String?
    @Flag(help: "Skip the PyTorch peer.") var noPeer = false
    @Flag(help: "One JSON object per line.") var json = false

    static let configurations: [(name: String, fraction: Double?)] = [("0%", 0), ("50%", 0.5), ("80%", 0.8), ("probe", nil)]

    func run() throws {
        guard model == "mlp" || model == "unet" else { throw ValidationError("--model must be mlp or unet, got '\(model)'") }
        let batch = self.batch ?? (model == "mlp" ? 256 : 32)
        guard batch > 0, threads > 0, steps > 0, rounds > 0 else { throw ValidationError("--batch, --threads, --steps and --rounds must be positive") }
        Parallel.threadCount = threads
        let peer = noPeer ? nil : TorchPeer(script: model == "mlp" ? PeerScripts.trainMLP : PeerScripts.trainUNet(config: String(decoding: UNet2DConfig.mnistReference.jsonData(), as: UTF8.self)))
        if !noPeer && peer == nil { progress("PyTorch peer unavailable: reporting ours only.") }
        let selected = only.map { Set($0.split(separator: ",").map(String.init)) }
        let configurations = Self.configurations.filter { selected?.contains($0.name) ?? true }
        guard !configurations.isEmpty else { throw ValidationError("--only names none of 0%, 50%, 80%, probe") }
        var ours: [String: [Double]] = [:], theirs: [String: [Double]] = [:], peaks: [String: Int] = [:]
        for round in 1...rounds {
            for (name, fraction) in configurations {
                progress("round \(round)/\(rounds)  \(model) \(name) frozen")
                let (times, peak) = try model == "mlp" ? measureMLP(fraction: fraction, batch: batch) : measureUNet(fraction: fraction, batch: batch)
                ours[name, default: []] += times
                peaks[name] = max(peaks[name] ?? 0, peak)
                if let peer, let answer = peer.request("train \(fraction.map { String($0) } ?? "probe") \(batch) \(threads) \(steps)") {
                    theirs[name, default: []] += answer.split(separator: " ").compactMap { Double($0) }
                }
            }
        }
        let rows = configurations.map { name, _ in
            BenchRow(bench: "train", config: "model=\(model),frozen=\(name),batch=\(batch),threads=\(threads)",
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
    private func measureMLP(fraction: Double?, batch: Int) throws -> ([Double], Int) {
        var generator = PhiloxGenerator(seed: 1)
        let model = Sequential([Linear(784, 1024, generator: &generator), ReLU(), Linear(1024, 1024, generator: &generator), ReLU(),
                                Linear(1024, 10, generator: &generator)])
        let x = Tensor(randomNormal: [batch, 784], generator: &generator)
        let labels = (0..<batch).map { $0 % 10 }
        try freezeLeading(model, fraction: fraction)
        return try timedSteps(model, steps: steps, learningRate: 1e-3) { crossEntropy(logits: model(x), labels: labels) }
    }
}

extension TrainBench {
    /// The reference UNet: epsilon-prediction MSE on noised random images, AdamW.
    private func measureUNet(fraction: Double?, batch: Int) throws -> ([Double], Int) {
        let unet = try UNet2DModel(config: .mnistReference, seed: 1)
        try freezeLeading(unet, fraction: fraction)
        var generator = PhiloxGenerator(seed: 2)
        let images = Tensor(randomUniform: [batch, 1, 28, 28], lower: -1, upper: 1, generator: &generator)
        let schedule = NoiseSchedule()
        return try timedSteps(unet, steps: steps, learningRate: 1e-4) {
            let noise = Tensor(randomNormal: images.shape, generator: &generator)
            let timesteps = (0..<batch).map { _ in Int(generator.nextUInt32() % 1000) }
            let noisy = schedule.addNoise(images, noise: noise, timesteps: timesteps)
            return meanSquaredError(unet(noisy, timesteps: timesteps.map(Float.init), classLabels: (0..<batch).map { $0 % 10 }), noise)
        }
    }
}

/// Freezes the first round(fraction·N) tensors in state_dict order; `nil` freezes all but the last two
/// (a linear probe).
func freezeLeading(_ module: Module, fraction: Double?) throws {
    let names = module.namedParameters().map(\.name)
    let count = fraction.map { Int(($0 * Double(names.count)).rounded()) } ?? names.count - 2
    try module.freeze(names: Array(names.prefix(count)))
}

/// Seconds of each of `steps` AdamW training steps after two warm-up steps, and the engine's peak bytes.
func timedSteps(_ module: Module, steps: Int, learningRate: Float, _ loss: () throws -> Tensor) throws -> ([Double], Int) {
    let optimizer = Adam.adamW(learningRate: learningRate)
    var times: [Double] = [], peak = 0
    for step in 0..<(steps + 2) {
        let start = monotonicSeconds()
        let result = try module.trainingStep(optimizer: optimizer, loss)
        if step >= 2 { times.append(monotonicSeconds() - start) }
        peak = max(peak, result.memory.peakBytes)
    }
    return (times, peak)
}

extension PeerScripts {
    /// Python twin of `freezeLeading` + `timedSteps`: freeze the first round(fraction·N) tensors
    /// (all but the last two when `fraction` is None), AdamW over the trainable ones, and the seconds
    /// of each step after 2 warm-up steps.
    static let timedSteps = """
    def timed_steps(model, loss_fn, lr, fraction, steps):
        params = list(model.named_parameters())
        frozen = len(params) - 2 if fraction is None else int(round(fraction * len(params)))
        for i, (_, p) in enumerate(params):
            p.requires_grad_(i >= frozen)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        times = []
        for step in range(steps + 2):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn().backward()
            optimizer.step()
            if step >= 2:
                times.append(time.perf_counter() - start)
        return times
    """

    /// The request loop both training peers share: `train FRACTION BATCH THREADS STEPS` builds the
    /// model with `build(batch)` → (model, loss_fn, lr), freezes the leading tensors as we do, and
    /// answers with the per-step seconds of zero-grad, loss, backward and AdamW after 2 warm-up steps.
    static func trainingServer(setup: String) -> String {
        """
    import json, sys, time
    import torch
    \(timedSteps)
    \(setup)
    print("ready", torch.__version__, flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        fraction, batch, threads, steps = parts[1], int(parts[2]), int(parts[3]), int(parts[4])
        torch.set_num_threads(threads)
        torch.manual_seed(1)
        model, loss_fn, lr = build(batch)
        times = timed_steps(model, loss_fn, lr, None if fraction == "probe" else float(fraction), steps)
        print(" ".join(repr(t) for t in times), flush=True)
    """
    }

    static func trainUNet(config: String) -> String {
        trainingServer(setup: """
    from diffusers import UNet2DModel
    # torch 2.13.0+cpu segfaults in the channels-last GroupNorm backward (diffusers' attention
    # group norm sees a transposed input) when the norm's weight is frozen but its input needs a
    # gradient; a contiguous input takes the working kernel.
    _group_norm = torch.nn.GroupNorm.forward
    torch.nn.GroupNorm.forward = lambda self, x: _group_norm(self, x.contiguous())
    config = {k: v for k, v in json.loads(\(String(reflecting: config))).items() if not k.startswith("_")}
    alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    def build(batch):
        model = UNet2DModel(**config)
        images = torch.rand(batch, 1, 28, 28) * 2 - 1
        labels = torch.arange(batch) % 10
        def loss_fn():
            noise = torch.randn_like(images)
            t = torch.randint(0, 1000, (batch,))
            noisy = alphas[t].sqrt().view(-1, 1, 1, 1) * images + (1 - alphas[t]).sqrt().view(-1, 1, 1, 1) * noise
            return torch.nn.functional.mse_loss(model(noisy, t, class_labels=labels).sample, noise)
        return model, loss_fn, 1e-4
    """)
    }

    static let trainMLP = trainingServer(setup: """
    def build(batch):
        model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                    torch.nn.Linear(1024, 10))
        x = torch.randn(batch, 784)
        labels = torch.arange(batch) % 10
        return model, (lambda: torch.nn.functional.cross_entropy(model(x), labels)), 1e-3
    """)
}
