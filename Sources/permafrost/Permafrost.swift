import ArgumentParser
import PermafrostTensor

/// The `permafrost` command-line tool.
@main
struct Permafrost: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "permafrost",
        abstract: "Selective tensor freezing for fine-tuning: guard masks, dynamic freezing, and the engine under them.",
        subcommands: [Demo.self, Pretrain.self, Sample.self, Evaluate.self, ClassifierCommand.self, GuardCommand.self, Finetune.self, AdapterCommand.self, TaskVectorCommand.self, FederatedCommand.self, GatesCommand.self, TextCommand.self, UNetCommand.self, CheckpointCommand.self, Serve.self, Bench.self]
    )
}

/// Options every compute-heavy command accepts.
struct EngineOptions: ParsableArguments {
    @Option(name: .long, help: "Threads for kernels and BLAS (default: PERMAFROST_THREADS or the number of cores).") var threads: Int?

    func apply() throws {
        if let threads {
            guard threads > 0 else { throw ValidationError("--threads must be positive, got \(threads)") }
            Parallel.threadCount = threads
        }
    }
}
