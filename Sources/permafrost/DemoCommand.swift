import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

/// `permafrost demo`: the publisher's and the user's story, end to end, at a small scale.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The guard story in three steps (mask, lock, users) on the shipped data, in about 12 minutes on 2 cores.",
        discussion: """
        Loads the shipped base (a class-conditional UNet pretrained on MNIST digits 0–5) and evaluation classifier (with a \
        "none of these" class; both trained first if missing), creates a publisher key, learns, signs and verifies a guard for \
        the far protocol (restricted: Fashion trouser/sneaker/bag; permitted: digits 6–9), locks it, then runs the standard \
        attack and a legitimate user's fine-tune against full fine-tuning, the mask-only guard and the locked guard, and \
        checks enforcement. report.html (tables, charts, the mask, sample grids), the keys and both guards go to --output.
        """
    )
    @Option(name: [.customLong("output"), .customLong("out")], help: "Output folder (--out is an alias).") var output: String = "demo-output"
    @Option(help: "Base UNet folder.") var base: String?
    @Option(help: "Evaluation classifier.") var classifier: String?
    @Option(help: "Freeze ratio (fraction of parameters).") var ratio: Double = 0.5
    @Option(help: "User fine-tuning steps per run (the standard attack's 150).") var userSteps: Int = 150
    @Option(help: "Guard learning steps.") var guardSteps: Int = 40
    @Option(help: "Lock steps.") var lockSteps: Int = 150
    @Option(help: "Samples per class.") var perClass: Int = 40
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let started = Date(), out = URL(fileURLWithPath: output)
        let (baseURL, classifierURL) = try GuardDemo.shippedModels(data: try dataOptions.shipped(), base: base, classifier: classifier)
        try requireCompatible(try UNet2DModel(directory: baseURL))
        let demo = GuardDemo(base: baseURL, classifier: classifierURL, output: out, data: try dataOptions.shipped(), ratio: ratio,
                             userSteps: userSteps, guardSteps: guardSteps, lockSteps: lockSteps, perClass: perClass)
        let guardBar = ProgressBar(total: guardSteps, label: "guard"); var lockBar: ProgressBar?
        let report = try demo.run(command: "permafrost demo --output \(output)", log: { note($0) }, guardProgress: { guardBar.update($0.step, detail: String(format: "L_r %.3f L_p %.3f", $0.restrictedLoss, $0.permittedLoss)) },
                                  lockStarted: { lockBar = ProgressBar(total: lockSteps, label: "lock", initial: $0) }) { lockBar?.update($0.step, detail: String(format: "L_r %.3f L_p %.3f L_retain %.4f", $0.restrictedLoss, $0.permittedLoss, $0.retainLoss)) }
        print(report.table + "\n\n" + report.goalLines.filter { !$0.hasSuffix("not measured") }.map { "- " + $0 }.joined(separator: "\n"))
        print("\nfinished in \(ProgressBar.clock(Date().timeIntervalSince(started))); open \(out.appendingPathComponent("report.html").path)")
    }
}
