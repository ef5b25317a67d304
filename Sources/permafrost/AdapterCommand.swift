import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

/// `permafrost adapter`: inspect PEFT LoRA adapter folders and merge them into a UNet.
struct AdapterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "adapter", abstract: "Inspect and merge PEFT LoRA adapter folders.",
                                                    subcommands: [Inspect.self, Merge.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an adapter folder's configuration, layers and parameter count.")
        @Argument(help: "A PEFT LoRA adapter folder.") var folder: String

        func run() throws {
            print(try PEFTAdapter(directory: URL(fileURLWithPath: folder)))
        }
    }

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge an adapter into a UNet2DModel folder (W + scale·B·A) and save the result.",
            discussion: "With --guard, the guard's tensors are enforced: an adapter that would change one is refused and nothing is written.")
        @Option(help: "Base UNet2DModel folder.") var model: String
        @Option(help: "PEFT LoRA adapter folder.") var adapter: String
        @Option(help: "A guard manifest whose tensors must not change.") var `guard`: String?
        @Option(help: "Output folder (a diffusers UNet2DModel).") var output: String

        func run() throws {
            let unet = try UNet2DModel(directory: URL(fileURLWithPath: model))
            if let path = self.guard { try unet.apply(try GuardManifest.load(from: URL(fileURLWithPath: path)).plan) }
            let modules = try PEFTAdapter(directory: URL(fileURLWithPath: adapter)).attach(to: unet)
            try unet.mergeLowRankAdapters()
            try unet.save(directory: URL(fileURLWithPath: output))
            print("merged \(modules.count) adapted layers into \(output)")
        }
    }
}
