import ArgumentParser
import Crypto
import Foundation
import PermafrostDiffusion
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

extension GuardProtocol {
    /// The protocol an option names, or a usage error.
    static func option(_ name: String) throws -> GuardProtocol {
        guard let spec = GuardProtocol.named(name) else {
            throw ValidationError("--protocol must be \(GuardProtocol.names.joined(separator: " or ")), got '\(name)'")
        }
        return spec
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
