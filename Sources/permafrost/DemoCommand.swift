import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

/// `permafrost demo`: the publisher's and the user's story, end to end, at a small scale.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole FreezeAsGuard story on the shipped data, in about 10 minutes on 2 cores.",
        discussion: """
        Loads the shipped base (a class-conditional UNet pretrained on MNIST digits 0–5) and evaluation classifier \
        (training them first if they are missing), creates a publisher key, learns and signs a guard for the far \
        protocol (restricted: Fashion trouser/sneaker/bag; permitted: digits 6–9), verifies it, fine-tunes with and \
        without it and with a random mask of the same size, and prints the table. Pictures and the signed guard.json \
        go to --output.
        """
    )
    @Option(name: [.customLong("output"), .customLong("out")], help: "Output folder (--out is an alias).") var output: String = "demo-output"
    @Option(help: "Base UNet folder.") var base: String?
    @Option(help: "Evaluation classifier.") var classifier: String?
    @Option(help: "Freeze ratio (fraction of parameters).") var ratio: Double = 0.5
    @Option(help: "User fine-tuning steps per run.") var userSteps: Int = 120
    @Option(help: "Guard learning steps.") var guardSteps: Int = 40
    @Option(help: "Samples per class.") var perClass: Int = 40
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let started = Date()
        let out = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let (baseURL, classifierURL) = try GuardDemo.shippedModels(data: try dataOptions.shipped(), base: base, classifier: classifier)
        try requireCompatible(try UNet2DModel(directory: baseURL))
        let demo = GuardDemo(base: baseURL, classifier: classifierURL, output: out, data: try dataOptions.shipped(), ratio: ratio,
                             userSteps: userSteps, guardSteps: guardSteps, perClass: perClass)
        let results = try demo.run(log: { note($0) }, guardProgress: GuardProgressBars().update)
        print(markdownTable(results))
        print(String(format: "\nfinished in %@; outputs in %@ (guard.json, publisher.pub, report.md, frontier.png, mask.png, grid-*.png)",
                     ProgressBar.clock(Date().timeIntervalSince(started)), out.path))
    }
}
