import Foundation
import PermafrostGuard
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import PermafrostIO
import Prometheus

/// Settings of `permafrost serve`.
public struct ServiceConfiguration: Sendable {
    public var dataDirectory: URL
    public var baseDirectory: URL
    public var guardURL: URL
    /// Pins the guard's signer (base64 Ed25519 public key); without it the manifest's own key is used.
    public var trustedPublisherKey: String?
    public var host = "127.0.0.1"
    /// 0 picks a free port (printed at start).
    public var port = 8080
    public var maxConcurrentJobs = 1
    public var checkpointEvery = 25
    public var uploads = UploadLimits()
    public var jobs = JobLimits()

    public init(dataDirectory: URL, baseDirectory: URL, guardURL: URL) {
        self.dataDirectory = dataDirectory; self.baseDirectory = baseDirectory; self.guardURL = guardURL
    }

    public var databasePath: String { dataDirectory.appendingPathComponent("permafrost.sqlite").path }
}

/// Each request's context: the authenticated token, when there is one.
public struct ServiceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var owner: TokenRecord?
    public init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
}

/// Bearer-token authentication for `/v1`: the secret's SHA-256 must name a live token.
struct BearerAuthentication: RouterMiddleware {
    let store: ServiceStore
    func handle(_ request: Request, context: ServiceRequestContext, next: (Request, ServiceRequestContext) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization] else { throw ServiceError.unauthorized("send 'Authorization: Bearer <token>' (create one with `permafrost serve tokens create`)") }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", parts[1].count <= 256 else {
            throw ServiceError.unauthorized("the Authorization header must be 'Bearer <token>'")
        }
        guard let token = try await store.token(secretDigest: TokenSecret.digest(String(parts[1]))) else {
            throw ServiceError.unauthorized("unknown or revoked token")
        }
        var context = context
        context.owner = token
        context.logger[metadataKey: "user"] = "\(token.name)"
        return try await next(request, context)
    }
}

/// Turns every error into a problem details document; Hummingbird's own errors (unknown route,
/// body too large) and unexpected ones included, the latter without internals.
struct ProblemMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: ServiceRequestContext, next: (Request, ServiceRequestContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ServiceError {
            throw error
        } catch let error as HTTPError {
            let detail = error.body ?? (error.status == .notFound ? "no such endpoint: \(request.method) \(request.uri.path)" : error.status.reasonPhrase)
            if error.status == .contentTooLarge { throw ServiceError.tooLarge("the request body exceeds the server's limit") }
            throw ServiceError(status: error.status, kind: error.status == .notFound ? "not-found" : "http-\(error.status.code)",
                               title: error.status.reasonPhrase, detail: detail)
        } catch {
            context.logger.error("internal error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            throw ServiceError(status: .internalServerError, kind: "internal", title: "Internal server error",
                               detail: "the server failed to handle this request; the error is in its log")
        }
    }
}

/// The enforced fine-tuning service.
public final class FineTuningService: Sendable {
    public let configuration: ServiceConfiguration
    public let store: ServiceStore
    public let published: PublishedModel
    public let scheduler: JobScheduler
    public let events = JobEvents()
    let parser: UploadParser
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    /// Sends every log line at `logLevel` or above to standard error and every metric to a
    /// Prometheus registry (served at `/metrics`), once per process; returns the registry.
    public static func bootstrapObservability(logLevel: Logger.Level) -> PrometheusCollectorRegistry {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    public init(configuration: ServiceConfiguration, registry: PrometheusCollectorRegistry, logger: Logger) throws {
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
        let fm = FileManager.default
        for folder in ["uploads", "jobs"] {
            try fm.createDirectory(at: configuration.dataDirectory.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        published = try PublishedModel(baseDirectory: configuration.baseDirectory, guardURL: configuration.guardURL,
                                       trustedKey: configuration.trustedPublisherKey)
        store = try ServiceStore(path: configuration.databasePath)
        var limits = configuration.uploads
        limits.imageSize = published.config.sampleSize ?? 28
        limits.classSlots = published.config.numClassEmbeds ?? 1
        parser = UploadParser(limits: limits)
        let runner = JobRunner(published: published, dataRoot: configuration.dataDirectory, checkpointEvery: configuration.checkpointEvery)
        scheduler = JobScheduler(store: store, runner: runner, events: events, maxConcurrent: configuration.maxConcurrentJobs, logger: logger)
        try removeOrphanedUploads()
    }

    /// Upload folders without a database row (a crash between writing and recording) and partial
    /// writes take disk space and nothing else: remove them.
    func removeOrphanedUploads() throws {
        let folder = configuration.dataDirectory.appendingPathComponent("uploads")
        let known = try store.allUploadIDs()
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where !known.contains(name) {
            try FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            logger.notice("removed an orphaned upload folder", metadata: ["folder": "\(name)"])
        }
    }

    /// Builds the application (routes and middleware). `onRunning` receives the bound port.
    public func application(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router(context: ServiceRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: LogRequestsMiddleware(.debug))
        router.get("healthz") { _, _ in Self.json(["status": "ok"]) }
        router.get("metrics") { [registry] _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: registry.emitToString())))
        }
        router.get("openapi.yaml") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/yaml"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.yaml)))
        }
        let api = router.group("v1").add(middleware: BearerAuthentication(store: store))
        api.get("guard") { [published] _, _ in
            Self.json(GuardSummary(baseSHA256: published.baseSHA256, publicKey: published.manifest.publicKey, guarded: published.manifest.frozen.sorted(),
                                   freezeRatio: published.manifest.freezeRatio, freezeRatioParameters: published.manifest.freezeRatioParameters,
                                   tensors: published.tensorNames))
        }
        api.post("uploads") { request, context in try await self.createUpload(request, context: context) }
        api.get("uploads") { _, context in Self.json(try await self.store.uploads(owner: try Self.owner(context)).map(UploadSummary.init)) }
        api.get("uploads/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let upload = try await self.store.upload(id: id, owner: try Self.owner(context)) else { throw ServiceError.notFound("no upload \(id)") }
            return Self.json(UploadSummary(upload))
        }
        api.post("jobs") { request, context in try await self.createJob(request, context: context) }
        api.get("jobs") { _, context in Self.json(try await self.store.jobs(owner: try Self.owner(context)).map(JobStatus.init)) }
        api.get("jobs/:id") { _, context in Self.json(JobStatus(try await self.ownedJob(context))) }
        api.post("jobs/:id/cancel") { _, context in
            let job = try await self.ownedJob(context)
            let record = try await self.scheduler.cancel(job: job, actor: try Self.owner(context))
            return Self.json(JobStatus(record), status: .accepted)
        }
        api.get("jobs/:id/events") { _, context in try await self.eventStream(context) }
        api.get("jobs/:id/delta") { _, context in
            try await self.artifact(context, file: { job in
                let files = JobFiles(root: self.configuration.dataDirectory, id: job.id)
                return Self.isLoRA(job) ? files.adapter.appendingPathComponent(PEFTAdapter.weightsFileName) : files.delta
            }, digest: { $0.deltaSHA256 }, contentType: "application/octet-stream")
        }
        // A LoRA job's PEFT adapter folder, file by file (save both in one folder for `PeftModel.from_pretrained`).
        api.get("jobs/:id/adapter/adapter_model.safetensors") { _, context in
            try await self.artifact(context, file: { JobFiles(root: self.configuration.dataDirectory, id: $0.id).adapter.appendingPathComponent(PEFTAdapter.weightsFileName) },
                                    digest: { Self.isLoRA($0) ? $0.deltaSHA256 : nil }, contentType: "application/octet-stream")
        }
        api.get("jobs/:id/adapter/adapter_config.json") { _, context in
            try await self.artifact(context, file: { JobFiles(root: self.configuration.dataDirectory, id: $0.id).adapter.appendingPathComponent(PEFTAdapter.configurationFileName) },
                                    digest: { Self.isLoRA($0) ? try self.verifiedReport($0).adapterConfigSHA256 : nil }, contentType: "application/json")
        }
        api.get("jobs/:id/report") { _, context in
            try await self.artifact(context, file: { JobFiles(root: self.configuration.dataDirectory, id: $0.id).report }, digest: { $0.reportSHA256 },
                                    contentType: "application/json")
        }
        let host = configuration.host, port = configuration.port
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "permafrost"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    // MARK: Handlers

    static func owner(_ context: ServiceRequestContext) throws -> String {
        guard let owner = context.owner?.id else { throw ServiceError.unauthorized("no token") }
        return owner
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    func ownedJob(_ context: ServiceRequestContext) async throws -> JobRecord {
        let id = try context.parameters.require("id")
        // Another user's job answers exactly like a missing one: nothing about it leaks.
        guard let job = try await store.job(id: id, owner: try Self.owner(context)) else { throw ServiceError.notFound("no job \(id)") }
        return job
    }

    func createUpload(_ request: Request, context: ServiceRequestContext) async throws -> Response {
        let owner = try Self.owner(context)
        let name = String(request.uri.queryParameters.get("name") ?? "upload")
        guard UploadName.isValid(name) else {
            throw ServiceError.badRequest("'name' must be 1–64 characters of letters, digits, '.', '_' or '-', not starting with '.' (got '\(name.prefix(80))')")
        }
        let limit = parser.limits.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw ServiceError.tooLarge("the body has \(length) bytes; the limit is \(limit)")
        }
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch { throw ServiceError.tooLarge("the body exceeds the limit of \(limit) bytes") }
        let body = Data(buffer: buffer)
        let (images, format) = try parser.parse(body: body, contentType: request.headers[.contentType])
        let id = UUID().uuidString.lowercased()
        let folder = configuration.dataDirectory.appendingPathComponent("uploads")
        let partial = folder.appendingPathComponent(".\(id).partial"), final = folder.appendingPathComponent(id)
        do {
            try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
            let files = images.idxFiles()
            try AtomicFile.write(files.images, to: partial.appendingPathComponent("images.idx"))
            try AtomicFile.write(files.labels, to: partial.appendingPathComponent("labels.idx"))
            try FileManager.default.moveItem(at: partial, to: final)
            let record = UploadRecord(id: id, owner: owner, name: name, format: format.rawValue, images: images.count,
                                      classSlots: Set(images.labels).sorted().map(String.init).joined(separator: ","),
                                      bytes: body.count, sha256: sha256Hex(body), createdAt: Date())
            try await store.insert(upload: record)
            Counter(label: "permafrost_upload_bytes_total").increment(by: body.count)
            context.logger.info("upload stored", metadata: ["upload": "\(id)", "images": "\(images.count)"])
            return Self.json(UploadSummary(record), status: .created)
        } catch {
            try? FileManager.default.removeItem(at: partial)
            try? FileManager.default.removeItem(at: final)
            throw error
        }
    }

    func createJob(_ request: Request, context: ServiceRequestContext) async throws -> Response {
        let owner = try Self.owner(context)
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: 1 << 20) } catch { throw ServiceError.tooLarge("a job request is at most 1 MiB") }
        let parameters = try JobParameters.validate(Data(buffer: buffer), limits: configuration.jobs,
                                                    tensorNames: published.tensorNames, guarded: published.guarded,
                                                    adaptable: published.adaptableLayers)
        guard try await store.upload(id: parameters.uploadID, owner: owner) != nil else {
            throw ServiceError.invalidJob("no upload \(parameters.uploadID) (upload a training set first: POST /v1/uploads)")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let job = try await store.createJob(owner: owner, uploadID: parameters.uploadID,
                                            parameters: String(decoding: try encoder.encode(parameters), as: UTF8.self), totalSteps: parameters.steps)
        try await scheduler.jobQueued()
        let current = try await store.job(id: job.id) ?? job
        var response = Self.json(JobStatus(current), status: .created)
        response.headers[.location] = "/v1/jobs/\(job.id)"
        return response
    }

    func eventStream(_ context: ServiceRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let owner = try Self.owner(context)
        // Subscribe before reading the row, so no change between the two is missed.
        let stream = events.subscribe(job: id)
        guard let job = try await store.job(id: id, owner: owner) else { throw ServiceError.notFound("no job \(id)") }
        let first = JobStatus(job)
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let body = ResponseBody { writer in
            try await writer.write(ByteBuffer(string: Self.serverSentEvent(first)))
            if !first.state.isTerminal {
                for await status in stream {
                    try await writer.write(ByteBuffer(string: Self.serverSentEvent(status)))
                    if status.state.isTerminal { break }
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    static func serverSentEvent(_ status: JobStatus) -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = String(decoding: (try? encoder.encode(status)) ?? Data(), as: UTF8.self)
        return "event: \(status.state.isTerminal ? "end" : "status")\ndata: \(data)\n\n"
    }

    /// Whether a job trains LoRA adapters (its result is a PEFT adapter folder).
    static func isLoRA(_ job: JobRecord) -> Bool {
        ((try? JSONDecoder().decode(JobParameters.self, from: Data(job.parameters.utf8)))?.lora) != nil
    }

    /// A succeeded job's report, after checking it against the digest recorded when it was written.
    func verifiedReport(_ job: JobRecord) throws -> FineTuneReport {
        let data = try Data(contentsOf: JobFiles(root: configuration.dataDirectory, id: job.id).report)
        guard sha256Hex(data) == job.reportSHA256 else {
            throw ServiceError(status: .internalServerError, kind: "artifact-damaged", title: "Artifact damaged",
                               detail: "the stored report of job \(job.id) no longer matches its recorded SHA-256; it is withheld")
        }
        return try JSONDecoder().decode(FineTuneReport.self, from: data)
    }

    func artifact(_ context: ServiceRequestContext, file: (JobRecord) -> URL, digest: (JobRecord) throws -> String?, contentType: String) async throws -> Response {
        let job = try await ownedJob(context)
        guard job.state == .succeeded else {
            throw ServiceError.conflict("job \(job.id) is \(job.state.rawValue); its results exist once it has succeeded")
        }
        guard let expected = try digest(job) else { throw ServiceError.notFound("job \(job.id) has no such result (a PEFT adapter exists for \"method\": \"lora\" jobs)") }
        let data = try Data(contentsOf: file(job))
        // Never hand out a damaged artifact: it must still hash to what was recorded when it was written.
        guard sha256Hex(data) == expected else {
            logger.critical("artifact digest mismatch", metadata: ["job": "\(job.id)"])
            throw ServiceError(status: .internalServerError, kind: "artifact-damaged", title: "Artifact damaged",
                               detail: "the stored result of job \(job.id) no longer matches its recorded SHA-256; it is withheld")
        }
        try await store.recordAudit(actor: try Self.owner(context), action: "job.download", target: job.id, detail: file(job).lastPathComponent)
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[HTTPField.Name("X-Content-SHA256")!] = expected
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Display names of uploads: they never become paths, but are still held to a safe alphabet.
enum UploadName {
    static func isValid(_ name: String) -> Bool {
        guard (1...64).contains(name.count), !name.hasPrefix(".") else { return false }
        return name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "._-".unicodeScalars.contains($0) }
    }
}

struct UploadSummary: Codable {
    var id: String, name: String, format: String, images: Int, classSlots: [Int], bytes: Int, sha256: String, createdAt: Date
    enum CodingKeys: String, CodingKey { case id, name, format, images, bytes, sha256, classSlots = "class_slots", createdAt = "created_at" }
    init(_ r: UploadRecord) {
        id = r.id; name = r.name; format = r.format; images = r.images; bytes = r.bytes; sha256 = r.sha256; createdAt = r.createdAt
        classSlots = r.classSlots.split(separator: ",").compactMap { Int($0) }
    }
}

struct GuardSummary: Codable {
    var baseSHA256: String, publicKey: String?, guarded: [String], freezeRatio: Double, freezeRatioParameters: Double, tensors: [String]
    enum CodingKeys: String, CodingKey {
        case guarded, tensors
        case baseSHA256 = "base_sha256", publicKey = "public_key", freezeRatio = "freeze_ratio", freezeRatioParameters = "freeze_ratio_params"
    }
}
