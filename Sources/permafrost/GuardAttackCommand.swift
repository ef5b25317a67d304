import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostModels

extension GuardCommand {
    struct Attack: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Attack published models with the named user attacks; report recognition per method and attack, and the locked guard's goal.",
            discussion: """
            Each --method is NAME=BASE or NAME=BASE:GUARD.json (NAME: full, guard, random, random-lock, lock-only, guard-lock). \
            Attacks: \(NamedAttack.names.joined(separator: ", ")). Writes OUTPUT/report.json, report.md and grids/; cells already \
            in OUTPUT/report.json are kept (an interrupted suite resumes).

            Example: permafrost guard attack --method full=Models/base-0-5 --method guard-lock=runs/locked/base:runs/locked/guard.json --attacks standard,long --output runs/attacks
            """)
        @Option(help: "A model under attack: NAME=BASE or NAME=BASE:GUARD.json (repeat).") var method: [String]
        @Option(help: "Attacks, comma-separated.") var attacks: String = "standard"
        @Option(help: "Seeds of the standard attack (the others run once).") var seeds: Int = 3
        @Flag(help: "Also run standard and long on a randomly initialised UNet (the scratch floor).") var scratch = false
        @Option(help: "Recognition-vs-steps curve: the standard attack run for each of these step counts (empty: none).") var curve: String = "10,25,50,100,150,300,600"
        @Option(help: "Protocol: near or far.") var `protocol`: String = "far"
        @Option(help: "Classifier (one with a \"none of these\" class scores noise as nothing).") var classifier: String = "Models/classifier-with-none.safetensors"
        @Option(help: "Samples per class (≥ 200 in the protocol).") var perClass: Int = 200
        @Option(help: "Output folder.") var output: String
        @Option(help: "Take the cells of unguarded methods (full, lock-only, scratch) from this report.json instead of measuring them again.") var reuse: String?
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let targets = try method.map(AttackSuite.Target.init(argument:)), named = try NamedAttack.list(attacks)
            let suite = AttackSuite(spec: try GuardProtocol.option(`protocol`), data: try dataOptions.shipped(), classifier: try ImageClassifier.load(from: URL(fileURLWithPath: classifier)))
            suite.perClass = perClass; suite.pictures = URL(fileURLWithPath: output).appendingPathComponent("grids")
            let report = try suite.runAll(targets: targets, attacks: named, seeds: seeds, scratch: scratch ? targets.first.map { AttackSuite.Target(method: "scratch", base: $0.base, manifest: nil, fromScratch: true) } : nil,
                                          curve: curve.isEmpty ? [] : try parsePositive(curve, name: "--curve"), command: "permafrost " + CommandLine.arguments.dropFirst().joined(separator: " "),
                                          digits: Array(0...5), to: URL(fileURLWithPath: output), reusing: try reuse.map { try AttackReport.load(from: URL(fileURLWithPath: $0)) }) { note($0) }
            print(report.markdown)
        }
    }
}
