import ArgumentParser
import Foundation
import PermafrostIO

/// `permafrost checkpoint …`: look inside and convert safetensors files.
struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Inspect and convert safetensors checkpoints.",
        subcommands: [Inspect.self, Convert.self]
    )

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List every tensor's name, dtype, shape and the SHA-256 of its stored bytes, and the metadata.",
            discussion: "Exits non-zero with the reason when the file is not a valid safetensors file."
        )

        @Argument(help: "A .safetensors file.") var file: String
        @Flag(help: "Print one JSON object instead of a table.") var json = false

        func run() throws {
            let url = URL(fileURLWithPath: file)
            let checkpoint: SafetensorsFile
            do { checkpoint = try SafetensorsFile(contentsOf: url) } catch {
                throw CLIError("\(file): \(error.description)")
            }
            let inventory = try CheckpointInventory(file: checkpoint, path: file, sha256: try sha256Hex(of: url))
            print(json ? try inventory.json() : inventory.table)
        }
    }

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite a checkpoint with its floating-point tensors in another dtype (integers and metadata kept).")

        @Argument(help: "Input .safetensors file.") var input: String
        @Argument(help: "Output .safetensors file (written atomically).") var output: String
        @Option(help: "Target dtype for floating-point tensors: F32, F16 or BF16.") var dtype: String = "F32"

        func run() throws {
            guard let target = SafetensorsDType(rawValue: dtype.uppercased()), [.f32, .f16, .bf16].contains(target) else {
                throw ValidationError("--dtype must be F32, F16 or BF16, got '\(dtype)'")
            }
            let file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: input))
            let count = try file.convertFloatingPoint(to: target, writingTo: URL(fileURLWithPath: output))
            print("wrote \(output): \(count) tensors as \(target.rawValue)")
        }
    }
}

/// A user-facing failure: printed as `Error: message`, exit code 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
