import Foundation
import PermafrostNN
import PermafrostTensor

/// `bench gemm`: SGEMM GFLOP/s for square matrices, ours vs `torch.mm`, interleaved per round.
public enum GEMMBenchmark {
    public static func run(sizes: [Int], threadCounts: [Int], rounds: Int, peer: TorchPeer?) -> [BenchRow] {
        var ours: [String: [Double]] = [:], theirs: [String: [Double]] = [:]
        let configs = sizes.flatMap { n in threadCounts.map { (n, $0) } }
        for round in 1...rounds {
            for (n, t) in configs {
                let key = "n=\(n),threads=\(t)"
                let reps = max(3, min(40, Int(4e9 / pow(Double(n), 3))))
                progress("round \(round)/\(rounds)  \(key)")
                Parallel.threadCount = t
                ours[key, default: []] += timedMatrixProducts(n: n, reps: reps)
                if let peer, let answer = peer.request("gemm \(n) \(t) \(reps)") {
                    theirs[key, default: []] += answer.split(separator: " ").compactMap { Double($0) }
                }
            }
        }
        return configs.map { n, t in
            let key = "n=\(n),threads=\(t)"
            let flops = 2 * pow(Double(n), 3)
            let peerSeconds = theirs[key].flatMap { $0.isEmpty ? nil : median($0) }
            return BenchRow(bench: "gemm", config: key, ours: flops / median(ours[key] ?? []) / 1e9, peer: peerSeconds.map { flops / $0 / 1e9 },
                            unit: "GFLOP/s", higherIsBetter: true)
        }
    }
}

/// `bench train`: a full training step at several freeze levels in this process, ours vs a
/// long-lived PyTorch peer, interleaved per round.
public enum TrainBenchmark {
    public static let configurations: [(name: String, fraction: Double?)] = [("0%", 0), ("50%", 0.5), ("80%", 0.8), ("probe", nil)]

    /// Rows per configuration, and our peak tensor bytes per configuration name.
    public static func run(workload: BenchWorkload, configurations: [(name: String, fraction: Double?)], batch: Int, threads: Int,
                           steps: Int, rounds: Int, peer: TorchPeer?) throws -> (rows: [BenchRow], peaks: [String: Int]) {
        Parallel.threadCount = threads
        let learningRate: Float = workload == .mlp ? 1e-3 : 1e-4
        var ours: [String: [Double]] = [:], theirs: [String: [Double]] = [:], peaks: [String: Int] = [:]
        for round in 1...rounds {
            for (name, fraction) in configurations {
                progress("round \(round)/\(rounds)  \(workload.rawValue) \(name) frozen")
                let (module, loss) = try workload.make(batch: batch)
                try freezeLeading(module, fraction: fraction)
                let (times, peak) = try timedSteps(module, steps: steps, learningRate: learningRate, loss)
                ours[name, default: []] += times
                peaks[name] = max(peaks[name] ?? 0, peak)
                if let peer, let answer = peer.request("train \(fraction.map { String($0) } ?? "probe") \(batch) \(threads) \(steps)") {
                    theirs[name, default: []] += answer.split(separator: " ").compactMap { Double($0) }
                }
            }
        }
        let rows = configurations.map { name, _ in
            BenchRow(bench: "train", config: "model=\(workload.rawValue),frozen=\(name),batch=\(batch),threads=\(threads)",
                     ours: median(ours[name] ?? []) * 1000, peer: theirs[name].flatMap { $0.isEmpty ? nil : median($0) * 1000 },
                     unit: "ms/step", higherIsBetter: false)
        }
        return (rows, peaks)
    }
}

/// `bench freeze`: every (model, frozen share) in a fresh process of ours and of PyTorch's, so each
/// peak RSS is that run's own; rounds interleave the two.
public enum FreezeBenchmark {
    public static let configurations = ["0%", "50%", "80%", "probe", "lora"]
    /// `lora`: rank-8 adapters (alpha 8) on these layers, the base frozen; the peer uses `peft` with the same targets.
    public static let loraTargets: [BenchWorkload: [String]] = [
        .unet: ["*.to_q", "*.to_k", "*.to_v", "*.to_out.0", "*.conv1", "*.conv2"],
        .mlp: ["*"],
    ]

    /// `worker` runs one configuration of ours (`[binary, "bench", "freeze-worker", …]`).
    public static func run(models: [BenchWorkload], configurations: [String], steps: Int, rounds: Int, threads: Int, peer: Bool,
                           worker: String) throws -> (rows: [BenchRow], peerRan: Bool) {
        let peerScript = try PeerScripts.url("freeze_peer.py"), config = try PeerScripts.referenceUNetConfig()
        defer { try? FileManager.default.removeItem(at: config) }
        let peerAvailable = peer && (try? runProcess(["/usr/bin/env", "python3", "-c", "import torch"])) != nil
        if peer && !peerAvailable { progress("PyTorch peer unavailable: reporting ours only.") }
        var ours: [String: [Double]] = [:], oursRSS: [String: Double] = [:], theirs: [String: [Double]] = [:], theirsRSS: [String: Double] = [:]
        for round in 1...rounds {
            for model in models {
                for frozen in configurations {
                    let key = "\(model.rawValue)|\(frozen)"
                    progress("round \(round)/\(rounds)  \(model.rawValue) \(frozen) frozen")
                    let output = try runProcess([worker, "bench", "freeze-worker", "--model", model.rawValue, "--frozen", frozen,
                                                 "--steps", "\(steps)", "--threads", "\(threads)"])
                    if let result = WorkerResult(output: output) {
                        ours[key, default: []] += result.seconds
                        oursRSS[key] = max(oursRSS[key] ?? 0, result.peakRSS)
                    }
                    if peerAvailable,
                       let output = try? runProcess(["/usr/bin/env", "python3", peerScript.path, model.rawValue, frozen, "\(steps)", "\(threads)", config.path]),
                       let result = WorkerResult(output: output) {
                        theirs[key, default: []] += result.seconds
                        theirsRSS[key] = max(theirsRSS[key] ?? 0, result.peakRSS)
                    }
                }
            }
        }
        var rows: [BenchRow] = []
        for model in models {
            for frozen in configurations {
                let key = "\(model.rawValue)|\(frozen)"
                guard let times = ours[key] else { continue }
                let name = "model=\(model.rawValue),frozen=\(frozen),threads=\(threads)"
                rows.append(BenchRow(bench: "freeze", config: name + ",metric=step", ours: median(times) * 1000,
                                     peer: theirs[key].map { median($0) * 1000 }, unit: "ms/step", higherIsBetter: false))
                rows.append(BenchRow(bench: "freeze", config: name + ",metric=peak_rss", ours: oursRSS[key] ?? 0,
                                     peer: theirsRSS[key], unit: "MB", higherIsBetter: false))
            }
        }
        return (rows, peerAvailable)
    }

    /// One configuration of ours, in this process: the seconds of each timed step and the peak RSS.
    public static func worker(model: BenchWorkload, frozen: String, steps: Int, threads: Int) throws -> WorkerResult {
        Parallel.threadCount = threads
        let (module, loss) = try model.make(batch: model == .mlp ? 256 : 32)
        switch frozen {
        case "probe": try freezeLeading(module, fraction: nil)
        case "lora":
            guard let targets = loraTargets[model] else { throw BenchError("the lora configuration is measured for \(loraTargets.keys.map(\.rawValue).sorted())") }
            try module.addLowRankAdapters(matching: targets, configuration: LoRAConfiguration(rank: 8, alpha: 8))
        default:
            guard frozen.hasSuffix("%"), let percent = Double(frozen.dropLast()) else { throw BenchError("--frozen: 0%, 50%, 80% or probe") }
            try freezeLeading(module, fraction: percent / 100)
        }
        let (times, _) = try timedSteps(module, steps: steps, learningRate: 1e-4, loss)
        return WorkerResult(seconds: times, peakRSS: MemoryStatistics.peakResidentMegabytes)
    }
}

/// What one fresh-process run — ours (`bench freeze-worker`, `bench text-worker`) or a PyTorch peer's —
/// prints as its last JSON line: the seconds of each timed step, the peak RSS, and (for `bench text`)
/// how many tensors it froze.
public struct WorkerResult: Sendable {
    public var seconds: [Double]
    public var peakRSS: Double
    public var frozenTensors: Int?

    public init(seconds: [Double], peakRSS: Double, frozenTensors: Int? = nil) {
        self.seconds = seconds; self.peakRSS = peakRSS; self.frozenTensors = frozenTensors
    }

    public init?(output: String) {
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let times = object["seconds"] as? [Double], let rss = (object["peak_rss_mb"] as? NSNumber)?.doubleValue else { return nil }
        self.init(seconds: times, peakRSS: rss, frozenTensors: (object["frozen_tensors"] as? NSNumber)?.intValue)
    }

    /// The JSON line a worker prints.
    public var jsonLine: String {
        var object: [String: Any] = ["seconds": seconds, "peak_rss_mb": peakRSS]
        if let frozenTensors { object["frozen_tensors"] = frozenTensors }
        return String(decoding: (try? JSONSerialization.data(withJSONObject: object)) ?? Data(), as: UTF8.self)
    }
}

/// Runs a command and returns its standard output (throws on a non-zero exit).
public func runProcess(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : FileManager.default.currentDirectoryPath + "/" + arguments[0])
    process.arguments = Array(arguments.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw BenchError("\(arguments.joined(separator: " ")) exited with \(process.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}
