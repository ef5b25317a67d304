import ArgumentParser
import Foundation
import PermafrostFederated
import PermafrostIO

/// `permafrost federated`: simulated federated LoRA (FedSVD and its baselines, optionally with DP-SGD).
struct FederatedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "federated",
        abstract: "Simulated federated LoRA on the shipped digits: FedSVD, FedAvg-LoRA and frozen-A LoRA, without and with DP-SGD.",
        discussion: """
        An MLP pretrained on digits 0–4 learns all ten digits through rank-r adapters trained by N clients (two digits \
        each with --non-iid). Every (method, noise, seed) runs; accuracy on the test split and ε (δ = 1e-5) land in \
        OUTPUT/results.json and OUTPUT/table.md.

        Example: permafrost federated --methods fedsvd,fedavg-lora,frozen-a --noise 0,0.8,1.5 --seeds 3 --output runs/federated
        """)
    @Option(help: "Methods: fedsvd, fedavg-lora, frozen-a.") var methods = "fedsvd,fedavg-lora,frozen-a"
    @Option(help: "DP-SGD noise multipliers (0: no DP).") var noise = "0,0.8,1.5"
    @Option(help: "Per-example clip norm for DP-SGD.") var clip: Float = 1
    @Option(help: "Seeds.") var seeds = 3
    @Option(help: "Clients.") var clients = 5
    @Option(help: "Rounds.") var rounds = 30
    @Option(help: "Local steps per round.") var localSteps = 10
    @Option(help: "LoRA rank.") var rank = 8
    @Option(help: "Client learning rate (SGD).") var learningRate: Float = 0.5
    @Option(help: "Two digits per client (true) or random shards (false).") var nonIID = true
    @Option(help: "Output folder.") var output: String
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try engine.apply()
        let chosen = try methods.split(separator: ",").map { name in
            guard let method = FederatedLoRA.Method(rawValue: String(name)) else { throw ValidationError("--methods: unknown method '\(name)'") }
            return method
        }
        let noises = try noise.split(separator: ",").map { text in
            guard let value = Float(text), value >= 0 else { throw ValidationError("--noise: '\(text)' is not a non-negative number") }
            return value
        }
        let data = try dataOptions.shipped()
        let train = try data.load(split: "train", digits: Set(0..<10)), test = try data.load(split: "t10k", digits: Set(0..<10))
        var results: [FederatedLoRA.Result] = []
        for seed in 0..<seeds {
            var settings = FederatedLoRA.Settings()
            (settings.clients, settings.rounds, settings.localSteps, settings.rank) = (clients, rounds, localSteps, rank)
            (settings.learningRate, settings.nonIID, settings.seed) = (learningRate, nonIID, UInt64(seed))
            let base = try FederatedLoRA.pretrainedBase(data: train, steps: settings.pretrainSteps, seed: UInt64(seed))
            for noise in noises {
                settings.dp = noise > 0 ? DPSGDSettings(clipNorm: clip, noiseMultiplier: noise) : nil
                for method in chosen {
                    let bar = ProgressBar(total: rounds, label: "\(method.rawValue) σ \(noise) seed \(seed)")
                    let result = try FederatedLoRA.run(method, base: base, train: train, test: test, settings: settings) { bar.update($0, detail: "") }
                    results.append(result)
                    print(String(format: "%@, σ %g, seed %d: %.1f%%%@", method.rawValue, noise, seed, result.testAccuracy * 100,
                                 result.epsilon.map { String(format: ", ε %.2f", $0) } ?? ""))
                }
            }
        }
        let out = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try AtomicFile.writeJSON(results, to: out.appendingPathComponent("results.json"))
        let table = FederatedLoRA.table(results)
        try AtomicFile.write(Data((table + "\n").utf8), to: out.appendingPathComponent("table.md"))
        print(table)
    }
}
