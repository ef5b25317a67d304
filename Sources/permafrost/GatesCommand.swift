import ArgumentParser
import Foundation
import PermafrostIO
import PermafrostModels

/// `permafrost gates`: Dopamine's mode specialisation — per-neuron gates on a frozen MLP vs LoRA.
struct GatesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gates",
        abstract: "Specialise a frozen MLP (pretrained on upright + 45°-rotated digits) to the rotated mode: frozen vs per-neuron gates vs LoRA.",
        discussion: "Writes OUTPUT/rows.json (with each run's most changed units) and OUTPUT/table.md.\n\nExample: permafrost gates --seeds 3 --output runs/gates")
    @Option(help: "Seeds.") var seeds = 3
    @Option(help: "Specialisation steps (batch 64).") var steps = 600
    @Option(help: "Output folder.") var output: String
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        var settings = ModeSpecializationExperiment.Settings()
        (settings.seeds, settings.specializeSteps) = (seeds, steps)
        let rows = try ModeSpecializationExperiment.run(data: try dataOptions.shipped(), settings: settings) { print($0) }
        let out = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try AtomicFile.writeJSON(rows, to: out.appendingPathComponent("rows.json"))
        let table = ModeSpecializationExperiment.table(rows)
        try AtomicFile.write(Data((table + "\n").utf8), to: out.appendingPathComponent("table.md"))
        print(table)
    }
}
