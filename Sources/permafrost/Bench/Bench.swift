import ArgumentParser
import Foundation

/// `permafrost bench …`: measurements against the PyTorch peer, taken in the same run.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print our speed beside PyTorch's, measured in the same run.",
        discussion: """
        Each benchmark interleaves our runs with the PyTorch peer's (a python3 process with torch) and \
        reports medians. Without torch the peer column is empty. With --json every row is one JSON object \
        per line: bench, config, ours, peer, unit, ratio (below 1.0 means we are faster).
        """,
        subcommands: [GEMMBench.self, TrainBench.self, FreezeBench.self, LoRABench.self, TextBench.self, FreezeWorker.self, TextWorker.self]
    )
}
