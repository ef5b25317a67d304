import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

/// `permafrost taskvec`: task vectors of UNet2DModel folders, and the OrthoReg task-arithmetic experiment.
struct TaskVectorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "taskvec", abstract: "Task vectors: make, add, subtract; the OrthoReg experiment.",
                                                    subcommands: [Make.self, Add.self, Sub.self, Experiment.self])

    struct Make: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "τ = fine-tuned − pretrained (Float64 safetensors; unchanged tensors left out).")
        @Option(help: "Pretrained UNet2DModel folder.") var pretrained: String
        @Option(help: "Fine-tuned UNet2DModel folder.") var fineTuned: String
        @Option(help: "Output .safetensors.") var output: String

        func run() throws {
            let vector = try TaskVector(pretrained: try UNet2DModel(directory: URL(fileURLWithPath: pretrained)),
                                        fineTuned: try UNet2DModel(directory: URL(fileURLWithPath: fineTuned)))
            try vector.write(to: URL(fileURLWithPath: output))
            print("wrote \(output): \(vector.names.count) tensors")
        }
    }

    struct Arithmetic: ParsableArguments {
        @Option(help: "UNet2DModel folder to change.") var model: String
        @Option(help: "Task vector file (repeat to merge several).") var vector: [String]
        @Option(help: "Scale of the summed vectors.") var scale: Double = 1
        @Option(help: "A guard manifest: vectors that change a guarded tensor are refused and nothing is written.") var `guard`: String?
        @Option(help: "Output folder.") var output: String

        func run(sign: Double) throws {
            let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
            if let path = self.guard { try unet.apply(try GuardManifest.load(from: URL(fileURLWithPath: path)).plan) }
            let vectors = try vector.map { try TaskVector(contentsOf: URL(fileURLWithPath: $0)) }
            guard let first = vectors.first else { throw ValidationError("give at least one --vector") }
            try vectors.dropFirst().reduce(first) { try $0 + $1 }.scaled(by: sign * scale).apply(to: unet)
            try unet.save(directory: URL(fileURLWithPath: output))
            print("wrote \(output)")
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "θ + scale·Σ τ (teach; merge tasks).")
        @OptionGroup var arguments: Arithmetic
        func run() throws { try arguments.run(sign: 1) }
    }

    struct Sub: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "θ − scale·Σ τ (forget; undo an addition).")
        @OptionGroup var arguments: Arithmetic
        func run() throws { try arguments.run(sign: -1) }
    }

    struct Experiment: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Three tasks fine-tuned from one pretrained MLP with and without OrthoReg, merged by task arithmetic; accuracy per task.")
        @Option(help: "OrthoReg weights λ (0: none).") var orthoreg: String = "0,0.01,0.1"
        @Option(help: "Seeds.") var seeds: Int = 3
        @Option(help: "Output folder (rows.json, table.md).") var output: String
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            var settings = TaskArithmeticExperiment.Settings()
            settings.seeds = seeds
            settings.orthoLambdas = try orthoreg.split(separator: ",").map { text in
                guard let value = Float(text), value >= 0 else { throw ValidationError("--orthoreg: '\(text)' is not a non-negative number") }
                return value
            }
            let rows = try TaskArithmeticExperiment.run(data: try dataOptions.shipped(), settings: settings) { print($0) }
            let out = URL(fileURLWithPath: output)
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try AtomicFile.writeJSON(rows, to: out.appendingPathComponent("rows.json"))
            let table = TaskArithmeticExperiment.table(rows)
            try AtomicFile.write(Data((table + "\n").utf8), to: out.appendingPathComponent("table.md"))
            print(table)
        }
    }
}
