import Foundation
import GRDB

/// A user's API token. Only the SHA-256 of the secret is stored.
public struct TokenRecord: Codable, FetchableRecord, PersistableRecord, Sendable, Equatable {
    public static let databaseTableName = "token"
    public var id: String
    public var name: String
    public var secretSHA256: String
    public var createdAt: Date
    public var revokedAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, name
        case secretSHA256 = "secret_sha256"
        case createdAt = "created_at"
        case revokedAt = "revoked_at"
    }
}

/// A validated training set, stored as an IDX pair under `uploads/<id>/`.
public struct UploadRecord: Codable, FetchableRecord, PersistableRecord, Sendable, Equatable {
    public static let databaseTableName = "upload"
    public var id: String
    public var owner: String
    public var name: String
    public var format: String
    public var images: Int
    public var classSlots: String
    public var bytes: Int
    public var sha256: String
    public var createdAt: Date

    public init(id: String, owner: String, name: String, format: String, images: Int, classSlots: String, bytes: Int, sha256: String, createdAt: Date) {
        self.id = id; self.owner = owner; self.name = name; self.format = format; self.images = images
        self.classSlots = classSlots; self.bytes = bytes; self.sha256 = sha256; self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, owner, name, format, images, bytes, sha256
        case classSlots = "class_slots"
        case createdAt = "created_at"
    }
}

/// Where a job is in its life.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case queued, running, succeeded, failed, cancelled
    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }
}

/// A fine-tuning job. `parameters` holds the validated request as JSON.
public struct JobRecord: Codable, FetchableRecord, PersistableRecord, Sendable, Equatable {
    public static let databaseTableName = "job"
    public var id: String
    /// Monotonic order of creation (queue fairness breaks ties by it).
    public var sequence: Int64
    public var owner: String
    public var uploadID: String
    public var parameters: String
    public var state: JobState
    public var step: Int
    public var totalSteps: Int
    public var loss: Double?
    public var message: String?
    public var attempts: Int
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var deltaSHA256: String?
    public var reportSHA256: String?
    public var cancelRequested: Bool

    enum CodingKeys: String, CodingKey {
        case id, sequence, owner, parameters, state, step, loss, message, attempts
        case uploadID = "upload_id"
        case totalSteps = "total_steps"
        case createdAt = "created_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case deltaSHA256 = "delta_sha256"
        case reportSHA256 = "report_sha256"
        case cancelRequested = "cancel_requested"
    }
}

/// One line of the audit log: who did what to which object.
public struct AuditRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    public static let databaseTableName = "audit"
    public var id: Int64?
    public var at: Date
    public var actor: String
    public var action: String
    public var target: String?
    public var detail: String?
}

/// The service's SQLite database (WAL mode, so status polls never wait for the trainer's writes).
public final class ServiceStore: Sendable {
    public let pool: DatabasePool

    /// The store of the service whose data folder is `dataDirectory` (created if missing).
    public convenience init(dataDirectory: URL) throws {
        try FileManager.default.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
        try self.init(path: dataDirectory.appendingPathComponent("permafrost.sqlite").path)
    }

    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // Full fsync at each commit: a SIGKILL or power loss never loses a committed job state.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: tokens, uploads, jobs, audit") { db in
            try db.create(table: "token") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull().unique()
                t.column("secret_sha256", .text).notNull().unique()
                t.column("created_at", .datetime).notNull()
                t.column("revoked_at", .datetime)
            }
            try db.create(table: "upload") { t in
                t.primaryKey("id", .text)
                t.column("owner", .text).notNull().indexed().references("token")
                t.column("name", .text).notNull()
                t.column("format", .text).notNull()
                t.column("images", .integer).notNull()
                t.column("class_slots", .text).notNull()
                t.column("bytes", .integer).notNull()
                t.column("sha256", .text).notNull()
                t.column("created_at", .datetime).notNull()
            }
            try db.create(table: "job") { t in
                t.primaryKey("id", .text)
                t.column("sequence", .integer).notNull().unique()
                t.column("owner", .text).notNull().indexed().references("token")
                t.column("upload_id", .text).notNull().references("upload")
                t.column("parameters", .text).notNull()
                t.column("state", .text).notNull().indexed()
                t.column("step", .integer).notNull()
                t.column("total_steps", .integer).notNull()
                t.column("loss", .double)
                t.column("message", .text)
                t.column("attempts", .integer).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("started_at", .datetime)
                t.column("finished_at", .datetime)
                t.column("delta_sha256", .text)
                t.column("report_sha256", .text)
                t.column("cancel_requested", .boolean).notNull()
            }
            try db.create(table: "audit") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("at", .datetime).notNull()
                t.column("actor", .text).notNull()
                t.column("action", .text).notNull()
                t.column("target", .text)
                t.column("detail", .text)
            }
        }
        return migrator
    }

    /// Appends to the audit log inside `db`'s transaction.
    static func audit(_ db: Database, actor: String, action: String, target: String? = nil, detail: String? = nil) throws {
        try AuditRecord(id: nil, at: Date(), actor: actor, action: action, target: target, detail: detail).insert(db)
    }

    // MARK: Tokens

    /// Creates a token named `name`; returns the record and the secret (shown once, never stored).
    public func createToken(name: String) throws -> (TokenRecord, String) {
        let secret = TokenSecret.generate()
        let record = TokenRecord(id: UUID().uuidString.lowercased(), name: name, secretSHA256: TokenSecret.digest(secret), createdAt: Date(), revokedAt: nil)
        try pool.write { db in
            if try TokenRecord.filter(Column("name") == name).fetchCount(db) > 0 { throw ServiceError.conflict("a token named '\(name)' already exists") }
            try record.insert(db)
            try Self.audit(db, actor: "admin", action: "token.create", target: record.id, detail: name)
        }
        return (record, secret)
    }

    public func tokens() throws -> [TokenRecord] {
        try pool.read { db in try TokenRecord.order(Column("created_at")).fetchAll(db) }
    }

    public func revokeToken(name: String) throws {
        try pool.write { db in
            guard var token = try TokenRecord.filter(Column("name") == name).fetchOne(db) else { throw ServiceError.notFound("no token named '\(name)'") }
            token.revokedAt = Date()
            try token.update(db)
            try Self.audit(db, actor: "admin", action: "token.revoke", target: token.id, detail: name)
        }
    }

    /// The live token whose secret hashes to `digest`.
    public func token(secretDigest digest: String) async throws -> TokenRecord? {
        try await pool.read { db in
            try TokenRecord.filter(Column("secret_sha256") == digest && Column("revoked_at") == nil).fetchOne(db)
        }
    }

    // MARK: Uploads and jobs, always scoped by owner

    public func insert(upload: UploadRecord) async throws {
        try await pool.write { db in
            try upload.insert(db)
            try Self.audit(db, actor: upload.owner, action: "upload.create", target: upload.id, detail: "\(upload.images) images, \(upload.bytes) bytes")
        }
    }

    public func upload(id: String, owner: String) async throws -> UploadRecord? {
        try await pool.read { db in try UploadRecord.filter(Column("id") == id && Column("owner") == owner).fetchOne(db) }
    }

    public func uploads(owner: String) async throws -> [UploadRecord] {
        try await pool.read { db in try UploadRecord.filter(Column("owner") == owner).order(Column("created_at")).fetchAll(db) }
    }

    public func allUploadIDs() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, sql: "SELECT id FROM upload")) }
    }

    public func job(id: String, owner: String) async throws -> JobRecord? {
        try await pool.read { db in try JobRecord.filter(Column("id") == id && Column("owner") == owner).fetchOne(db) }
    }

    public func job(id: String) async throws -> JobRecord? {
        try await pool.read { db in try JobRecord.fetchOne(db, key: id) }
    }

    public func jobs(owner: String) async throws -> [JobRecord] {
        try await pool.read { db in try JobRecord.filter(Column("owner") == owner).order(Column("sequence")).fetchAll(db) }
    }

    /// Inserts a queued job with the next sequence number.
    public func createJob(owner: String, uploadID: String, parameters: String, totalSteps: Int) async throws -> JobRecord {
        try await pool.write { db in
            let next = (try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM job") ?? 0) + 1
            let job = JobRecord(id: UUID().uuidString.lowercased(), sequence: next, owner: owner, uploadID: uploadID, parameters: parameters,
                                state: .queued, step: 0, totalSteps: totalSteps, loss: nil, message: nil, attempts: 0, createdAt: Date(),
                                startedAt: nil, finishedAt: nil, deltaSHA256: nil, reportSHA256: nil, cancelRequested: false)
            try job.insert(db)
            try Self.audit(db, actor: owner, action: "job.create", target: job.id, detail: parameters)
            return job
        }
    }

    /// Applies `change` to the job inside one transaction and returns the new record.
    @discardableResult
    public func updateJob(id: String, actor: String = "system", action: String? = nil, detail: String? = nil,
                          _ change: @escaping @Sendable (inout JobRecord) throws -> Void) async throws -> JobRecord {
        try await pool.write { db in
            guard var job = try JobRecord.fetchOne(db, key: id) else { throw ServiceError.notFound("no job \(id)") }
            try change(&job)
            try job.update(db)
            if let action { try Self.audit(db, actor: actor, action: action, target: id, detail: detail) }
            return job
        }
    }

    /// Queued jobs in creation order.
    public func queuedJobs() async throws -> [JobRecord] {
        try await pool.read { db in try JobRecord.filter(Column("state") == JobState.queued.rawValue).order(Column("sequence")).fetchAll(db) }
    }

    public func jobs(in state: JobState) throws -> [JobRecord] {
        try pool.read { db in try JobRecord.filter(Column("state") == state.rawValue).order(Column("sequence")).fetchAll(db) }
    }

    /// SQLite's own consistency check: `["ok"]` when the file is sound.
    public func integrityCheck() throws -> [String] {
        try pool.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
    }

    public func auditLog(limit: Int = 1000) throws -> [AuditRecord] {
        try pool.read { db in try AuditRecord.order(Column("id").desc).limit(limit).fetchAll(db) }
    }

    /// Appends one event (e.g. a download) to the audit log, in its own transaction.
    public func recordAudit(actor: String, action: String, target: String? = nil, detail: String? = nil) async throws {
        try await pool.write { db in try Self.audit(db, actor: actor, action: action, target: target, detail: detail) }
    }
}
