import ArgumentParser
import Foundation
import Logging
import PermafrostGuard
import PermafrostService
import PermafrostTensor

/// `permafrost serve`: the publisher's enforced fine-tuning API.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the enforced fine-tuning HTTP service, or manage its tokens.",
        discussion: """
        The service fine-tunes the base model for users identified by bearer tokens, always with the publisher's \
        signed guard enforced, and hands out a delta checkpoint plus a report proving every guarded tensor unchanged. \
        API: openapi.yaml (also served at /openapi.yaml); guide: docs/SERVICE.md.

        Example:
          permafrost serve tokens create --data service-data --name alice
          permafrost serve start --data service-data --base Models/base-0-5 --guard guard.json --publisher-key publisher.pub
        """,
        subcommands: [Start.self, Tokens.self],
        defaultSubcommand: Start.self
    )

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start the service (the default subcommand).")
        @Option(help: "Data folder (database, uploads, job outputs); created if missing.") var data: String
        @Option(help: "Base UNet2DModel folder.") var base: String
        @Option(help: "Signed guard manifest every job enforces.") var `guard`: String
        @Option(help: "Trusted publisher public key file (pins the guard's signer).") var publisherKey: String?
        @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
        @Option(help: "Port (0: any free port, printed at start).") var port: Int = 8080
        @Option(help: "Jobs that train at once.") var concurrentJobs: Int = 1
        @Option(help: "Checkpoint every N steps (a killed server resumes from the last one).") var checkpointEvery: Int = 25
        @Option(help: "Largest upload body in bytes.") var maxUploadBytes: Int = 64 << 20
        @Option(help: "Most training steps a job may ask for.") var maxSteps: Int = 2000
        @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"
        @OptionGroup var engine: EngineOptions

        func validate() throws {
            guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0…65535") }
            guard concurrentJobs >= 1 else { throw ValidationError("--concurrent-jobs must be at least 1") }
            guard checkpointEvery >= 1 else { throw ValidationError("--checkpoint-every must be at least 1") }
            guard maxUploadBytes >= 1024 else { throw ValidationError("--max-upload-bytes must be at least 1024") }
            guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
        }

        func run() async throws {
            try engine.apply()
            let registry = FineTuningService.bootstrapObservability(logLevel: Logger.Level(rawValue: logLevel) ?? .info)
            var settings = ServiceConfiguration(dataDirectory: URL(fileURLWithPath: data), baseDirectory: URL(fileURLWithPath: base),
                                                guardURL: URL(fileURLWithPath: self.guard))
            settings.trustedPublisherKey = try publisherKey.map { try GuardKeys.publicKey(from: URL(fileURLWithPath: $0)) }
            settings.host = host; settings.port = port; settings.maxConcurrentJobs = concurrentJobs
            settings.checkpointEvery = checkpointEvery; settings.uploads.maxBodyBytes = maxUploadBytes; settings.jobs.maxSteps = maxSteps
            let logger = Logger(label: "permafrost.serve")
            let service: FineTuningService
            do {
                service = try FineTuningService(configuration: settings, registry: registry, logger: logger)
            } catch let error as GuardError {
                throw CLIError("refusing to serve: \(error.description)")
            }
            try await service.scheduler.start()
            let host = self.host
            let app = service.application { port in
                // Unbuffered: a supervisor or test reads this line to learn the port.
                FileHandle.standardOutput.write(Data("permafrost serve: listening on http://\(host):\(port)\n".utf8))
            }
            try await app.runService()
        }
    }

    struct Tokens: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create, list or revoke API tokens.", subcommands: [Create.self, List.self, Revoke.self])

        struct Create: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Create a token and print its secret (shown once; only its hash is stored).")
            @Option(help: "Data folder of the service.") var data: String
            @Option(help: "Who the token is for (unique).") var name: String
            @Flag(help: "Print only the secret.") var quiet = false
            func run() throws {
                guard !name.isEmpty, name.count <= 64 else { throw ValidationError("--name must be 1–64 characters") }
                let store = try ServiceStore(dataDirectory: URL(fileURLWithPath: data))
                do {
                    let (record, secret) = try store.createToken(name: name)
                    if quiet { print(secret) } else { print("token for \(record.name) (id \(record.id)):\n\(secret)\nStore it now: it is not shown again.") }
                } catch let error as ServiceError {
                    throw CLIError(error.detail)
                }
            }
        }

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List tokens (names and dates, never secrets).")
            @Option(help: "Data folder of the service.") var data: String
            func run() throws {
                let store = try ServiceStore(dataDirectory: URL(fileURLWithPath: data))
                for token in try store.tokens() {
                    print("\(token.name)\t\(token.id)\tcreated \(token.createdAt)\(token.revokedAt.map { "\trevoked \($0)" } ?? "")")
                }
            }
        }

        struct Revoke: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revoke a token by name.")
            @Option(help: "Data folder of the service.") var data: String
            @Option(help: "Token name.") var name: String
            func run() throws {
                let store = try ServiceStore(dataDirectory: URL(fileURLWithPath: data))
                do { try store.revokeToken(name: name) } catch let error as ServiceError { throw CLIError(error.detail) }
                print("revoked \(name)")
            }
        }
    }
}
