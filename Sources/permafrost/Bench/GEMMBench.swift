import ArgumentParser
import Foundation
import PermafrostTensor

/// `permafrost bench gemm`: SGEMM throughput, ours (BLAS through the engine's wrapper) vs PyTorch.
struct GEMMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "SGEMM GFLOP/s for square matrices on 1 and 2 threads, beside PyTorch's torch.mm.",
        discussion: "Target: at n = 1024 and 2048 on 2 threads, ratio ≤ 1/0.9 (≥ 0.9× PyTorch's GFLOP/s)."
    )

    @Option(help: "Matrix sizes n (n×n · n×n), comma-separated.")
    var sizes: String = "512,1024,2048"

    @Option(name: .customLong("thread-counts"), help: "Thread counts to measure, comma-separated.")
    var threadCounts: String = "1,2"

    @Option(help: "Interleaved rounds (ours then peer per configuration); medians are taken over all timings.")
    var rounds: Int = 3

    @Flag(help: "Skip the PyTorch peer even if torch is installed.")
    var noPeer = false

    @Flag(help: "Print one JSON object per line instead of a table.")
    var json = false

    func run() throws {
        let ns = try parseList(sizes, name: "--sizes")
        let threads = try parseList(threadCounts, name: "--thread-counts")
        guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
        let peer = noPeer ? nil : TorchPeer(script: PeerScripts.gemm)
        if !noPeer && peer == nil { progress("PyTorch peer unavailable (python3 -c 'import torch' failed): reporting ours only.") }

        var ours: [String: [Double]] = [:], theirs: [String: [Double]] = [:]
        let configs = ns.flatMap { n in threads.map { (n, $0) } }
        for round in 1...rounds {
            for (n, t) in configs {
                let key = "n=\(n),threads=\(t)"
                let reps = repetitions(n)
                progress("round \(round)/\(rounds)  \(key)")
                Parallel.threadCount = t
                ours[key, default: []] += measureOurs(n: n, reps: reps)
                if let peer, let answer = peer.request("gemm \(n) \(t) \(reps)") {
                    theirs[key, default: []] += answer.split(separator: " ").compactMap { Double($0) }
                }
            }
        }
        let rows = configs.map { n, t -> BenchRow in
            let key = "n=\(n),threads=\(t)"
            let flops = 2 * pow(Double(n), 3)
            let our = flops / median(ours[key] ?? []) / 1e9
            let peerSeconds = theirs[key].flatMap { $0.isEmpty ? nil : median($0) }
            return BenchRow(bench: "gemm", config: key, ours: our, peer: peerSeconds.map { flops / $0 / 1e9 },
                            unit: "GFLOP/s", higherIsBetter: true)
        }
        BenchPrinter.print(rows, json: json, peerName: peer.map { "torch \($0.version)" })
    }

    private func repetitions(_ n: Int) -> Int { max(3, min(40, Int(4e9 / pow(Double(n), 3)))) }

    /// Per-call seconds for `reps` products after one warm-up call.
    private func measureOurs(n: Int, reps: Int) -> [Double] {
        var generator = PhiloxGenerator(seed: 1)
        let a = Tensor(randomNormal: [n, n], generator: &generator)
        let b = Tensor(randomNormal: [n, n], generator: &generator)
        _ = a.matmul(b)
        var times: [Double] = []
        var c = Tensor.zeros([n, n])
        for _ in 0..<reps {
            let start = monotonicSeconds()
            Tensor.matmul(a, b, into: &c)
            times.append(monotonicSeconds() - start)
        }
        return times
    }
}

func parseList(_ text: String, name: String) throws -> [Int] {
    let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else {
        throw ValidationError("\(name) must be a comma-separated list of positive integers, got '\(text)'")
    }
    return values.map { $0! }
}

/// Python sources of the PyTorch peers. Each prints `ready <torch version>`, then answers one line
/// per request with space-separated per-call seconds.
enum PeerScripts {
    static let gemm = """
    import sys, time
    import torch
    torch.manual_seed(0)
    print("ready", torch.__version__, flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        n, threads, reps = int(parts[1]), int(parts[2]), int(parts[3])
        torch.set_num_threads(threads)
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - start)
        print(" ".join(repr(t) for t in times), flush=True)
    """
}
