import ArgumentParser
import Crypto
import Foundation
import PermafrostDiffusion
import PermafrostFreeze
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// The evaluation protocols of `docs/PROTOCOLS.md`: which digits / Fashion classes are restricted
/// and permitted, and the class slots they are taught under.
struct GuardProtocol {
    var name: String
    var restrictedDigits: Set<Int>, restrictedFashion: Set<Int>
    var permittedDigits: Set<Int>, permittedFashion: Set<Int>
    /// Unused slots a malicious user teaches the restricted content under.
    static let maliciousSlots = [13, 14, 15]

    static func named(_ name: String) throws -> GuardProtocol {
        switch name {
        case "near": return GuardProtocol(name: name, restrictedDigits: [6, 7], restrictedFashion: [], permittedDigits: [8, 9], permittedFashion: [1, 7, 8])
        case "far": return GuardProtocol(name: name, restrictedDigits: [], restrictedFashion: [1, 7, 8], permittedDigits: [6, 7, 8, 9], permittedFashion: [])
        default: throw ValidationError("--protocol must be near or far, got '\(name)'")
        }
    }

    /// Guard learning uses the even-indexed training images; evaluation fine-tuning the odd ones,
    /// so the publisher's representative set never overlaps the user's data.
    static func half(_ set: LabeledImages, publisher: Bool) -> LabeledImages {
        set.selecting(set.labels.indices.filter { ($0 % 2 == 0) == publisher })
    }

    func restricted(_ data: DataOptions, split: String = "train") throws -> LabeledImages {
        try data.load(split: split, digits: restrictedDigits, fashion: restrictedFashion)
    }

    func permitted(_ data: DataOptions, split: String = "train") throws -> LabeledImages {
        try data.load(split: split, digits: permittedDigits, fashion: permittedFashion)
    }

    /// The restricted images relabelled to the malicious slots (class k of the set → slot 13 + k).
    static func maliciouslyRelabeled(_ set: LabeledImages) -> LabeledImages {
        let classes = Set(set.labels).sorted()
        return set.relabeled(Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($0.element, maliciousSlots[$0.offset % maliciousSlots.count]) }))
    }
}

/// Refuses models the shipped data cannot train: 28×28 single-channel images, class slots up to `slots`.
func requireCompatible(_ model: UNet2DModel, slots: Int = 16) throws {
    let c = model.config
    guard (c.sampleSize ?? 28) == 28, c.inChannels == 1, c.outChannels == 1 else {
        throw CLIError("the model takes \(c.inChannels)×\(c.sampleSize ?? 0)×\(c.sampleSize ?? 0) samples; the shipped data is 1×28×28")
    }
    guard let classes = c.numClassEmbeds, classes >= slots else {
        throw CLIError("the model has \(c.numClassEmbeds.map(String.init) ?? "no") class slots; the protocols use \(slots) (digits 0–9, Fashion 10–12, unused 13–15)")
    }
}

/// Epsilon-prediction loss of `model` on a batch of `data` chosen by a Philox stream.
func diffusionLoss(_ model: UNet2DModel, data: LabeledImages, schedule: NoiseSchedule, seed: UInt64, stream: UInt64, batch: Int) -> Tensor {
    var generator = PhiloxGenerator(seed: seed, stream: stream)
    let indices = (0..<batch).map { _ in Int(generator.nextUInt32()) % data.count }
    let images = data.batch(indices)
    let noise = Tensor(randomNormal: images.shape, generator: &generator)
    let timesteps = indices.map { _ in Int(generator.nextUInt32()) % schedule.trainTimesteps }
    let noisy = schedule.addNoise(images, noise: noise, timesteps: timesteps)
    return meanSquaredError(model(noisy, timesteps: timesteps.map(Float.init), classLabels: indices.map { data.labels[$0] }), noise)
}

struct GuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guard",
        abstract: "FreezeAsGuard for publishers: learn, sign, verify and inspect guard manifests.",
        subcommands: [Keygen.self, Learn.self, Sign.self, Verify.self, Inspect.self, EvaluateGuard.self, Summarize.self]
    )

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an Ed25519 key pair for signing guards.")
        @Option(help: "Private key file (written with mode 600).") var privateKey: String = "publisher.key"
        @Option(help: "Public key file (give this to users).") var publicKey: String = "publisher.pub"
        func run() throws {
            let key = try GuardKeys.generate(privateKeyURL: URL(fileURLWithPath: privateKey), publicKeyURL: URL(fileURLWithPath: publicKey))
            print("wrote \(privateKey) and \(publicKey) (public key \(key))")
        }
    }

    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Learn which tensors of a base UNet to freeze so that fine-tuning cannot learn the restricted domain.",
            discussion: """
            Bilevel mask learning (FreezeAsGuard): simulated user steps on restricted + permitted data alternate with \
            publisher steps that raise the restricted loss, keep the permitted loss low, and pull the frozen share to \
            --ratio. Writes the manifest (signed when --key is given) and a PNG of the soft mask per tensor.

            Example: permafrost guard learn --base runs/base --protocol far --ratio 0.5 --output guard.json --key publisher.key
            """
        )
        @Option(help: "Base UNet2DModel folder.") var base: String
        @Option(help: "Protocol defining restricted and permitted data: near or far (docs/PROTOCOLS.md).") var `protocol`: String = "far"
        @Option(help: "Target freeze ratio.") var ratio: Float = 0.5
        @Flag(help: "Count the ratio in parameters instead of tensors.") var byParameters = false
        @Option(help: "Learning steps.") var steps: Int = 100
        @Option(help: "Batch size of each loss.") var batch: Int = 16
        @Option(help: "Mask temperature T.") var temperature: Float = 0.2
        @Option(help: "Sparsity weight c.") var sparsity: Float = 500
        @Option(help: "Mask learning rate (Adam; with --mask-sgd the paper's plain gradient descent, whose rate was 3e2).") var maskLearningRate: Float = 0.1
        @Flag(help: "Update the mask logits by plain gradient descent, as the paper's code does.") var maskSgd = false
        @Option(help: "Ratio control: penalty (the paper's c·(ratio − mean m)²) or projection (exact ratio by a shared offset; logits by normalised gradient descent).") var ratioControl: GuardSettings.RatioControl = .penalty
        @Option(help: "Simulated user's learning rate.") var userLearningRate: Float = 1e-3
        @Option(help: "Every N-th step is a publisher step.") var userInterval: Int = 5
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Output manifest.") var output: String = "guard.json"
        @Option(help: "Soft-mask plot (PNG).") var plot: String?
        @Flag(help: "Freeze the tensors whose soft mask ends above 0.5 (the paper's rule) instead of cutting the mask's ranking at --ratio.") var threshold = false
        @Option(help: "Private key to sign with (from `permafrost guard keygen`).") var key: String?
        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var engine: EngineOptions

        func run() throws {
            try engine.apply()
            let baseURL = URL(fileURLWithPath: base)
            let model = try UNet2DModel(directory: baseURL)
            try requireCompatible(model)
            let spec = try GuardProtocol.named(`protocol`)
            let restrictedAll = GuardProtocol.half(try spec.restricted(dataOptions), publisher: true)
            let restricted = restrictedAll + GuardProtocol.maliciouslyRelabeled(restrictedAll)
            let permitted = GuardProtocol.half(try spec.permitted(dataOptions), publisher: true)
            var settings = GuardSettings()
            settings.freezeRatio = ratio; settings.weightByParameters = byParameters; settings.steps = steps
            settings.temperature = temperature; settings.sparsityWeight = sparsity; settings.maskLearningRate = maskLearningRate
            settings.maskAdam = !maskSgd; settings.ratioControl = ratioControl
            settings.userLearningRate = userLearningRate; settings.userInterval = userInterval; settings.seed = seed
            let schedule = NoiseSchedule()
            let bar = ProgressBar(total: steps, label: "guard")
            let learner = GuardLearner(model: model, settings: settings)
            let mask = learner.learn(
                restrictedLoss: { diffusionLoss(model, data: restricted, schedule: schedule, seed: seed, stream: UInt64(2 * $0), batch: batch) },
                permittedLoss: { diffusionLoss(model, data: permitted, schedule: schedule, seed: seed, stream: UInt64(2 * $0 + 1), batch: batch) }
            ) { p in
                bar.update(p.step, detail: String(format: "L_restricted %.4f L_permitted %.4f frozen %.0f%%", p.restrictedLoss, p.permittedLoss, p.hardFreezeRatio * 100))
            }
            var fields = settings.dictionary
            fields["protocol"] = spec.name
            fields["selection"] = threshold ? "soft mask > 0.5" : "soft-mask ranking cut at the ratio"
            let sizes = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, byParameters ? $0.parameter.value.count : 1) })
            let frozen = threshold ? mask.frozen : mask.frozen(ratio: Double(ratio), sizes: sizes)
            var manifest = try GuardManifest(model: model, frozen: frozen,
                                             baseSHA256: try sha256Hex(of: baseURL.appendingPathComponent(UNet2DModel.weightsFileName)), settings: fields)
            if let key { try manifest.sign(with: try GuardKeys.privateKey(from: URL(fileURLWithPath: key))) }
            try manifest.write(to: URL(fileURLWithPath: output))
            if let plot { try Plot.bars(mask.softMask, to: URL(fileURLWithPath: plot)) }
            print(String(format: "guard: %d of %d tensors frozen (%.1f%% of tensors, %.1f%% of parameters)%@ → %@",
                         manifest.frozen.count, mask.names.count, manifest.freezeRatio * 100, manifest.freezeRatioParameters * 100,
                         key == nil ? " (unsigned: sign with `permafrost guard sign`)" : ", signed", output))
            if let last = mask.trace.last {
                print(String(format: "learner trace: restricted loss %.4f, permitted loss %.4f at the last publisher step", last.restricted, last.permitted))
                if last.restricted < last.permitted {
                    print("warning: the simulated user's restricted loss is below its permitted loss — this guard is unlikely to mitigate (see docs/PROTOCOLS.md)")
                }
            }
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a guard manifest with a publisher's private key.")
        @Argument(help: "Guard manifest.") var manifest: String
        @Option(help: "Private key file.") var key: String
        func run() throws {
            var guardManifest = try GuardManifest.load(from: URL(fileURLWithPath: manifest))
            try guardManifest.sign(with: try GuardKeys.privateKey(from: URL(fileURLWithPath: key)))
            try guardManifest.write(to: URL(fileURLWithPath: manifest))
            print("signed \(manifest) (public key \(guardManifest.publicKey ?? ""))")
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a guard's signature; optionally that it belongs to a base and that a model kept every guarded tensor.",
            discussion: "Exits 0 only when every requested check passes."
        )
        @Argument(help: "Guard manifest.") var manifest: String
        @Option(help: "Trusted publisher public key file (without it, the key embedded in the manifest is used).") var publicKey: String?
        @Option(help: "Base UNet folder (or safetensors file) the guard must belong to.") var base: String?
        @Option(help: "A model folder or full checkpoint whose guarded tensors must equal the base bit for bit.") var model: String?
        func run() throws {
            do {
                let guardManifest = try GuardManifest.load(from: URL(fileURLWithPath: manifest))
                try guardManifest.verifySignature(trustedKey: try publicKey.map { try GuardKeys.publicKey(from: URL(fileURLWithPath: $0)) })
                print("signature: ok (\(guardManifest.publicKey ?? ""))\(publicKey == nil ? " — embedded key; pass --public-key to pin the publisher" : "")")
                if let base {
                    try guardManifest.verifyBase(weightsURL(base))
                    print("base: ok (\(guardManifest.baseSHA256))")
                }
                if let model {
                    let changed = try guardManifest.changedTensors(in: try SafetensorsFile(contentsOf: weightsURL(model)))
                    guard changed.isEmpty else { throw GuardError.tensorChanged(names: changed) }
                    print("model: ok (\(guardManifest.frozen.count) guarded tensors bit-identical to the base)")
                }
            } catch let error as GuardError {
                throw CLIError(error.description)
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise a guard manifest.")
        @Argument(help: "Guard manifest.") var manifest: String
        func run() throws {
            let m = try GuardManifest.load(from: URL(fileURLWithPath: manifest))
            let signed: String
            do { try m.verifySignature(); signed = "valid signature by \(m.publicKey ?? "")" } catch { signed = "\(error)" }
            print("""
            \(manifest): \(m.format)
              base SHA-256   \(m.baseSHA256)
              frozen         \(m.frozen.count) tensors (\(String(format: "%.1f", m.freezeRatio * 100))% of tensors, \(String(format: "%.1f", m.freezeRatioParameters * 100))% of parameters)
              signature      \(signed)
              settings       \(m.settings.keys.sorted().map { "\($0)=\(m.settings[$0]!)" }.joined(separator: " "))
            """)
            for name in m.frozen { print("  \(name)") }
        }
    }
}

/// The weights file inside a diffusers folder, or the path itself.
func weightsURL(_ path: String) -> URL {
    let url = URL(fileURLWithPath: path)
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
        return url.appendingPathComponent(UNet2DModel.weightsFileName)
    }
    return url
}

extension GuardCommand {
    /// `permafrost guard summarize REPORT`: the goal check of a `guard evaluate` report.
    struct Summarize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise a guard evaluation report (means per method and ratio, and the goal check).")
        @Argument(help: "report.json from `permafrost guard evaluate`.") var report: String
        func run() throws {
            let data = try Data(contentsOf: URL(fileURLWithPath: report))
            let decoded: GuardReport
            do { decoded = try JSONDecoder().decode(GuardReport.self, from: data) } catch {
                throw CLIError("'\(report)' is not a guard evaluation report: \(error)")
            }
            print("# \(decoded.protocol) protocol\n\nCommand: `\(decoded.command)`\n")
            print(goalSummary(decoded.results))
        }
    }
}

extension GuardSettings.RatioControl: ExpressibleByArgument {}
