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

        @Argument(help: "A .safetensors file.")
        var file: String

        @Flag(help: "Print one JSON object instead of a table.")
        var json = false

        func run() throws {
            let url = URL(fileURLWithPath: file)
            let checkpoint: SafetensorsFile
            do { checkpoint = try SafetensorsFile(contentsOf: url) } catch {
                throw CLIError("\(file): \(error.description)")
            }
            var rows: [[String: Any]] = []
            for entry in checkpoint.entries {
                let digest = sha256Hex(try checkpoint.storedBytes(named: entry.name))
                rows.append(["name": entry.name, "dtype": entry.dtype.rawValue, "shape": entry.shape, "sha256": digest,
                             "bytes": entry.byteRange.count])
            }
            if json {
                let object: [String: Any] = ["file": file, "sha256": try sha256Hex(of: url), "metadata": checkpoint.metadata, "tensors": rows]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            print("\(file)  (\(checkpoint.entries.count) tensors, file SHA-256 \(try sha256Hex(of: url)))")
            for key in checkpoint.metadata.keys.sorted() { print("  metadata \(key) = \(checkpoint.metadata[key]!)") }
            let nameWidth = max(4, checkpoint.entries.map(\.name.count).max() ?? 0)
            print("  " + "name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  dtype  shape                 sha256")
            for row in rows {
                let shape = "[" + (row["shape"] as! [Int]).map(String.init).joined(separator: ", ") + "]"
                print("  " + (row["name"] as! String).padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                      + (row["dtype"] as! String).padding(toLength: 5, withPad: " ", startingAt: 0) + "  "
                      + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + "  " + (row["sha256"] as! String))
            }
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
            do {
                let file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: input))
                var items: [SafetensorsWriter.Item] = []
                for entry in file.entries {
                    if entry.dtype.isFloatingPoint {
                        items.append(.init(name: entry.name, tensor: try file.tensor(named: entry.name), dtype: target))
                    } else {
                        items.append(.init(name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes: [UInt8](try file.storedBytes(named: entry.name))))
                    }
                }
                try SafetensorsWriter.write(items, metadata: file.metadata, to: URL(fileURLWithPath: output))
                print("wrote \(output): \(items.count) tensors as \(target.rawValue)")
            } catch {
                throw CLIError(error.description)
            }
        }
    }
}

/// A user-facing failure: printed as `Error: message`, exit code 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
