import ArgumentParser
import Foundation
import PermafrostBench

/// `permafrost bench gemm`: SGEMM throughput, ours (BLAS through the engine's wrapper) vs PyTorch.
struct GEMMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "SGEMM GFLOP/s for square matrices on 1 and 2 threads, beside PyTorch's torch.mm.",
        discussion: "Target: at n = 1024 and 2048 on 2 threads, ratio ≤ 1/0.9 (≥ 0.9× PyTorch's GFLOP/s)."
    )

    @Option(help: "Matrix sizes n (n×n · n×n), comma-separated.") var sizes: String = "512,1024,2048"
    @Option(name: .customLong("thread-counts"), help: "Thread counts to measure, comma-separated.") var threadCounts: String = "1,2"
    @Option(help: "Interleaved rounds (ours then peer per configuration); medians are taken over all timings.") var rounds: Int = 3
    @Flag(help: "Skip the PyTorch peer even if torch is installed.") var noPeer = false
    @Flag(help: "Print one JSON object per line instead of a table.") var json = false

    func run() throws {
        let ns = try parsePositive(sizes, name: "--sizes")
        let threads = try parsePositive(threadCounts, name: "--thread-counts")
        guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
        let peer = noPeer ? nil : TorchPeer(script: try PeerScripts.url("gemm_peer.py"))
        if !noPeer && peer == nil { note("PyTorch peer unavailable (python3 -c 'import torch' failed): reporting ours only.") }
        let rows = GEMMBenchmark.run(sizes: ns, threadCounts: threads, rounds: rounds, peer: peer)
        BenchPrinter.print(rows, json: json, peerName: peer.map { "torch \($0.version)" })
    }
}
