import ArgumentParser
import Foundation
import PermafrostDiffusion
import PermafrostModels
import PermafrostNN
import PermafrostTensor

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
    @Option(help: "Configurations: 0%,50%,80%,probe.") var configs: String = "0%,50%,80%,probe"
    @Option(help: "Timed steps per run (after 2 warm-up steps).") var steps: Int = 5
    @Option(help: "Interleaved rounds.") var rounds: Int = 1
    @Option(help: "Threads.") var threads: Int = 2
    @Flag(help: "Skip the PyTorch peer.") var noPeer = false
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        let modelList = models.split(separator: ",").map(String.init)
        let configList = configs.split(separator: ",").map(String.init)
        for m in modelList where !["mlp", "cnn", "unet", "bert"].contains(m) { throw ValidationError("unknown model '\(m)'") }
        for c in configList where !["0%", "50%", "80%", "probe"].contains(c) { throw ValidationError("unknown configuration '\(c)'") }
        let peerScript = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-freeze-peer-\(getpid()).py")
        try PeerScripts.freeze(config: String(decoding: UNet2DConfig.mnistReference.jsonData(), as: UTF8.self)).write(to: peerScript, atomically: true, encoding: .utf8)
        let peerAvailable = !noPeer && (try? runProcess(["/usr/bin/env", "python3", "-c", "import torch"])) != nil
        if !noPeer && !peerAvailable { progress("PyTorch peer unavailable: reporting ours only.") }
        var ours: [String: [Double]] = [:], oursRSS: [String: Double] = [:], theirs: [String: [Double]] = [:], theirsRSS: [String: Double] = [:]
        for round in 1...rounds {
            for model in modelList {
                for config in configList {
                    let key = "\(model)|\(config)"
                    progress("round \(round)/\(rounds)  \(model) \(config) frozen")
                    let self_ = try runProcess([CommandLine.arguments[0], "bench", "freeze-worker", "--model", model, "--frozen", config,
                                                "--steps", "\(steps)", "--threads", "\(threads)"])
                    if let result = parseWorker(self_) {
                        ours[key, default: []] += result.0
                        oursRSS[key] = max(oursRSS[key] ?? 0, result.1)
                    }
                    if peerAvailable, let output = try? runProcess(["/usr/bin/env", "python3", peerScript.path, model, config, "\(steps)", "\(threads)"]),
                       let result = parseWorker(output) {
                        theirs[key, default: []] += result.0
                        theirsRSS[key] = max(theirsRSS[key] ?? 0, result.1)
                    }
                }
            }
        }
        var rows: [BenchRow] = []
        for model in modelList {
            for config in configList {
                let key = "\(model)|\(config)"
                guard let times = ours[key] else { continue }
                let name = "model=\(model),frozen=\(config),threads=\(threads)"
                rows.append(BenchRow(bench: "freeze", config: name + ",metric=step", ours: median(times) * 1000,
                                     peer: theirs[key].map { median($0) * 1000 }, unit: "ms/step", higherIsBetter: false))
                rows.append(BenchRow(bench: "freeze", config: name + ",metric=peak_rss", ours: oursRSS[key] ?? 0,
                                     peer: theirsRSS[key], unit: "MB", higherIsBetter: false))
            }
        }
        BenchPrinter.print(rows, json: json, peerName: peerAvailable ? "torch" : nil)
    }

    private func parseWorker(_ output: String) -> ([Double], Double)? {
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let times = object["seconds"] as? [Double], let rss = (object["peak_rss_mb"] as? NSNumber)?.doubleValue else { return nil }
        return (times, rss)
    }
}

/// Runs a command and returns its standard output (throws on a non-zero exit).
func runProcess(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : FileManager.default.currentDirectoryPath + "/" + arguments[0])
    process.arguments = Array(arguments.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw CLIError("\(arguments.joined(separator: " ")) exited with \(process.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

/// One configuration in a fresh process: prints `{"seconds": [...], "peak_rss_mb": …}`.
struct FreezeWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "freeze-worker", abstract: "(internal) one run of `bench freeze`.", shouldDisplay: false)
    @Option var model: String
    @Option var frozen: String
    @Option var steps: Int = 5
    @Option var threads: Int = 2

    func run() throws {
        Parallel.threadCount = threads
        var g = PhiloxGenerator(seed: 1)
        let module: Module
        let loss: () -> Tensor
        switch model {
        case "mlp":
            let mlp = Sequential([Linear(784, 1024, generator: &g), ReLU(), Linear(1024, 1024, generator: &g), ReLU(), Linear(1024, 10, generator: &g)])
            let x = Tensor(randomNormal: [256, 784], generator: &g)
            module = mlp
            loss = { crossEntropy(logits: mlp(x), labels: (0..<256).map { $0 % 10 }) }
        case "cnn":
            let cnn = ImageClassifier(classes: 10, seed: 1)
            let x = Tensor(randomUniform: [64, 1, 28, 28], lower: -1, upper: 1, generator: &g)
            module = cnn
            loss = { crossEntropy(logits: cnn.logits(x), labels: (0..<64).map { $0 % 10 }) }
        case "unet":
            let unet = try UNet2DModel(config: .mnistReference, seed: 1)
            let images = Tensor(randomUniform: [32, 1, 28, 28], lower: -1, upper: 1, generator: &g)
            let schedule = NoiseSchedule()
            module = unet
            var stream: UInt64 = 0
            loss = {
                stream += 1
                var r = PhiloxGenerator(seed: 2, stream: stream)
                let noise = Tensor(randomNormal: images.shape, generator: &r)
                let t = (0..<32).map { _ in Int(r.nextUInt32() % 1000) }
                return meanSquaredError(unet(schedule.addNoise(images, noise: noise, timesteps: t), timesteps: t.map(Float.init), classLabels: (0..<32).map { $0 % 10 }), noise)
            }
        case "bert":
            let bert = EncoderClassifier(seed: 1)
            let tokens = (0..<(8 * 128)).map { _ in Int(g.nextUInt32() % 30522) }
            module = bert
            loss = { crossEntropy(logits: bert(tokens: tokens, batch: 8, length: 128), labels: (0..<8).map { $0 % 2 }) }
        default:
            throw ValidationError("unknown model \(model)")
        }
        switch frozen {
        case "probe": try freezeLeading(module, fraction: nil)
        default:
            guard let percent = Double(frozen.dropLast()) else { throw ValidationError("--frozen: 0%, 50%, 80% or probe") }
            try freezeLeading(module, fraction: percent / 100)
        }
        let (times, _) = try timedSteps(module, steps: steps, learningRate: 1e-4, loss)
        let peakMB = peakResidentMegabytes()
        let object: [String: Any] = ["seconds": times, "peak_rss_mb": peakMB]
        print(String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }
}

extension PeerScripts {
    static func freeze(config: String) -> String {
        """
    import json, resource, sys, time
    import torch
    \(timedSteps)
    model_name, frozen, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    if model_name == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
        x = torch.randn(256, 784); y = torch.arange(256) % 10
        loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)
    elif model_name == "cnn":
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
                                    torch.nn.Flatten(), torch.nn.Linear(3136, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        x = torch.rand(64, 1, 28, 28) * 2 - 1; y = torch.arange(64) % 10
        loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)
    elif model_name == "unet":
        from diffusers import UNet2DModel
        _gn = torch.nn.GroupNorm.forward  # torch 2.13 CPU channels-last GroupNorm backward segfault workaround
        torch.nn.GroupNorm.forward = lambda self, v: _gn(self, v.contiguous())
        cfg = {k: v for k, v in json.loads(\(String(reflecting: config))).items() if not k.startswith("_")}
        model = UNet2DModel(**cfg)
        images = torch.rand(32, 1, 28, 28) * 2 - 1
        alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
        labels = torch.arange(32) % 10
        def loss_fn():
            noise = torch.randn_like(images); t = torch.randint(0, 1000, (32,))
            noisy = alphas[t].sqrt().view(-1, 1, 1, 1) * images + (1 - alphas[t]).sqrt().view(-1, 1, 1, 1) * noise
            return torch.nn.functional.mse_loss(model(noisy, t, class_labels=labels).sample, noise)
    else:
        class Encoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = torch.nn.Embedding(30522, 384)
                self.positions = torch.nn.Embedding(512, 384)
                self.layers = torch.nn.ModuleList([torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, activation="gelu", batch_first=True) for _ in range(6)])
                self.head = torch.nn.Linear(384, 2)
            def forward(self, tokens):
                h = self.embedding(tokens) + self.positions(torch.arange(tokens.shape[1]))[None]
                for layer in self.layers:
                    h = layer(h)
                return self.head(h.mean(1))
        model = Encoder()
        tokens = torch.randint(0, 30522, (8, 128)); y = torch.arange(8) % 2
        loss_fn = lambda: torch.nn.functional.cross_entropy(model(tokens), y)
    times = timed_steps(model, loss_fn, 1e-4, None if frozen == "probe" else float(frozen[:-1]) / 100, steps)
    print(json.dumps({"seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
    }
}

/// This process's peak resident set size, MiB.
func peakResidentMegabytes() -> Double {
    var usage = rusage()
    #if os(Linux)
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024          // kilobytes on Linux
    #else
    getrusage(RUSAGE_SELF, &usage)
    return Double(usage.ru_maxrss) / 1_048_576     // bytes on macOS
    #endif
}
