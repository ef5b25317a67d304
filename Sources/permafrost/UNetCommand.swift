import ArgumentParser
import Foundation
import PermafrostIO
import PermafrostModels
import PermafrostTensor

/// `permafrost unet forward`: run a saved UNet on tensors from a file.
struct UNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unet", abstract: "Run diffusers UNet2DModel folders.", subcommands: [Forward.self])

    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a saved UNet2DModel on `sample`, `timestep` (int64 or float) and optional `class_labels` from a safetensors file; write `sample`.",
            discussion: "Example: permafrost unet forward --model my-unet --inputs in.safetensors --output out.safetensors"
        )
        @Option(help: "A diffusers UNet2DModel folder.") var model: String
        @Option(help: "Input .safetensors with sample [B,C,H,W], timestep [B] or [] and optional class_labels [B].") var inputs: String
        @Option(help: "Output .safetensors (tensor `sample`).") var output: String
        @Option(help: "A PEFT LoRA adapter folder to apply (adapter_config.json, adapter_model.safetensors).") var adapter: String?
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
            if let adapter { try PEFTAdapter(directory: URL(fileURLWithPath: adapter)).attach(to: unet) }
            let file: SafetensorsFile
            do { file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: inputs)) } catch { throw CLIError("\(inputs): \(error)") }
            let result = try unet.forward(inputs: file)
            try SafetensorsWriter.write([(name: "sample", tensor: result)], to: URL(fileURLWithPath: output))
            print("wrote \(output): sample \(result.shape)")
        }
    }
}
