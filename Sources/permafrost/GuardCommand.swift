import ArgumentParser
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels

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
    if let problem = model.config.shippedDataProblem(slots: slots) { throw CLIError(problem) }
}

struct GuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guard",
        abstract: "FreezeAsGuard for publishers: learn, sign, verify and inspect guard manifests.",
        subcommands: [Keygen.self, Learn.self, Lock.self, Attack.self, Sign.self, Verify.self, Inspect.self, EvaluateGuard.self, Summarize.self]
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
        @Option(help: "Base model folder (a diffusers UNet or a BERT; or its safetensors file) the guard must belong to.") var base: String?
        @Option(help: "A model folder or full checkpoint whose guarded tensors must equal the base bit for bit.") var model: String?
        func run() throws {
            let guardManifest = try GuardManifest.load(from: URL(fileURLWithPath: manifest))
            try guardManifest.verifySignature(trustedKey: try publicKey.map { try GuardKeys.publicKey(from: URL(fileURLWithPath: $0)) })
            print("signature: ok (\(guardManifest.publicKey ?? ""))\(publicKey == nil ? " — embedded key; pass --public-key to pin the publisher" : "")")
            if let base {
                try guardManifest.verifyBase(try ModelFamily(path: base).weightsURL(base))
                print("base: ok (\(guardManifest.baseSHA256))")
            }
            if let model {
                let changed = try guardManifest.changedTensors(in: try SafetensorsFile(contentsOf: try ModelFamily(path: model).weightsURL(model)))
                guard changed.isEmpty else { throw GuardError.tensorChanged(names: changed) }
                print("model: ok (\(guardManifest.frozen.count) guarded tensors bit-identical to the base)")
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise a guard manifest.")
        @Argument(help: "Guard manifest.") var manifest: String
        func run() throws {
            print(try GuardManifest.load(from: URL(fileURLWithPath: manifest)).summary(named: manifest))
        }
    }
}

extension GuardCommand {
    /// `permafrost guard summarize REPORT`: the goal check of a `guard evaluate` report.
    struct Summarize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise a guard evaluation or attack suite report (means per method, and the goal check).")
        @Argument(help: "report.json from `permafrost guard evaluate` or `permafrost guard attack`.") var report: String
        func run() throws { print(try (try? AttackReport.load(from: URL(fileURLWithPath: report)))?.markdown ?? GuardReport.load(from: URL(fileURLWithPath: report)).goalText) }
    }
}

extension GuardSettings.RatioControl: ExpressibleByArgument {}
extension GuardSelection: ExpressibleByArgument {}
