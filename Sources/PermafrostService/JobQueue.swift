import Foundation
import Logging
import PermafrostGuard
import PermafrostIO
import Metrics
import Synchronization

/// A job's state as the API shows it (also each server-sent event's data).
public struct JobStatus: Codable, Sendable, Equatable {
    public var id: String
    public var state: JobState
    public var step: Int
    public var totalSteps: Int
    public var loss: Double?
    public var message: String?
    public var uploadID: String
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var attempts: Int
    public var deltaSHA256: String?

    enum CodingKeys: String, CodingKey {
        case id, state, step, loss, message, attempts
        case totalSteps = "total_steps", uploadID = "upload_id", createdAt = "created_at", startedAt = "started_at"
        case finishedAt = "finished_at", deltaSHA256 = "delta_sha256"
    }

    public init(_ job: JobRecord) {
        id = job.id; state = job.state; step = job.step; totalSteps = job.totalSteps; loss = job.loss; message = job.message
        uploadID = job.uploadID; createdAt = job.createdAt; startedAt = job.startedAt; finishedAt = job.finishedAt
        attempts = job.attempts; deltaSHA256 = job.deltaSHA256
    }
}

/// Fan-out of job status changes to server-sent-event streams.
public final class JobEvents: Sendable {
    private let subscribers = Mutex<[String: [UUID: AsyncStream<JobStatus>.Continuation]]>([:])

    public init() {}

    /// A stream of `job`'s updates; it finishes after a terminal state.
    public func subscribe(job: String) -> AsyncStream<JobStatus> {
        let (stream, continuation) = AsyncStream<JobStatus>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let key = UUID()
        subscribers.withLock { $0[job, default: [:]][key] = continuation }
        continuation.onTermination = { [weak self] _ in
            self?.subscribers.withLock { all in
                all[job]?[key] = nil
                if all[job]?.isEmpty == true { all[job] = nil }
            }
        }
        return stream
    }

    public func publish(_ status: JobStatus) {
        let targets = subscribers.withLock { Array(($0[status.id] ?? [:]).values) }
        for continuation in targets {
            continuation.yield(status)
            if status.state.isTerminal { continuation.finish() }
        }
    }
}

/// The job queue: at most `maxConcurrent` jobs train at once; the next job goes to the user with the
/// fewest running jobs, then the one who started a job least recently, then the oldest request — so
/// one user's burst of jobs cannot starve the others.
public actor JobScheduler {
    let store: ServiceStore
    let runner: JobRunner
    let events: JobEvents
    let maxConcurrent: Int
    let logger: Logger
    private var running: [String: (owner: String, cancel: CancelFlag)] = [:]
    private var lastStart: [String: Date] = [:]
    private var started = false

    /// Set by a cancel request, read by the training thread between steps.
    final class CancelFlag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .relaxed) }
        var isSet: Bool { value.load(ordering: .relaxed) }
    }

    public init(store: ServiceStore, runner: JobRunner, events: JobEvents, maxConcurrent: Int, logger: Logger) {
        self.store = store; self.runner = runner; self.events = events; self.maxConcurrent = max(1, maxConcurrent); self.logger = logger
    }

    /// Recovers jobs a killed server left running, then starts queued ones. Call once at start.
    public func start() async throws {
        guard !started else { return }
        started = true
        for job in try store.jobs(in: .running) {
            let files = JobFiles(root: runner.dataRoot, id: job.id)
            if job.cancelRequested {
                try await finish(job.id, state: .cancelled, message: "cancelled by the user at step \(job.step) (the server stopped before it could)")
            } else if job.attempts >= 3 {
                try await finish(job.id, state: .failed, message: "interrupted \(job.attempts) times; giving up (last step \(job.step))")
            } else {
                let note = files.hasCheckpoint
                    ? "interrupted at step \(job.step) by a server stop; resuming from its last checkpoint"
                    : "interrupted at step \(job.step) by a server stop before its first checkpoint; restarting from step 0"
                let status = try await store.updateJob(id: job.id, action: "job.recover", detail: note) { $0.state = .queued; $0.message = note }
                events.publish(JobStatus(status))
                logger.warning("recovered job", metadata: ["job": "\(job.id)", "note": "\(note)"])
            }
        }
        try await pump()
    }

    /// Call after a job was queued.
    public func jobQueued() async throws { try await pump() }

    /// Cancels a queued job at once, or asks a running one to stop at its next step.
    public func cancel(job: JobRecord, actor: String) async throws -> JobRecord {
        if let handle = running[job.id] {
            handle.cancel.set()
            return try await store.updateJob(id: job.id, actor: actor, action: "job.cancel", detail: "requested while running") { $0.cancelRequested = true }
        }
        guard job.state == .queued else { throw ServiceError.conflict("job \(job.id) is \(job.state.rawValue); only queued or running jobs can be cancelled") }
        let record = try await store.updateJob(id: job.id, actor: actor, action: "job.cancel", detail: "while queued") {
            $0.state = .cancelled; $0.cancelRequested = true; $0.finishedAt = Date(); $0.message = "cancelled by the user before it started"
        }
        events.publish(JobStatus(record))
        Gauge(label: "permafrost_jobs_queued").record(try await store.queuedJobs().count)
        return record
    }

    public var runningCount: Int { running.count }

    private func pump() async throws {
        while running.count < maxConcurrent {
            let queued = try await store.queuedJobs()
            Gauge(label: "permafrost_jobs_queued").record(queued.count)
            var load: [String: Int] = [:]
            for handle in running.values { load[handle.owner, default: 0] += 1 }
            guard let next = queued.min(by: { a, b in
                let key = { (job: JobRecord) in (load[job.owner] ?? 0, self.lastStart[job.owner] ?? .distantPast, job.sequence) }
                let (la, sa, qa) = key(a), (lb, sb, qb) = key(b)
                return (la, sa.timeIntervalSince1970, qa) < (lb, sb.timeIntervalSince1970, qb)
            }) else { return }
            try await launch(next)
        }
    }

    private func launch(_ queued: JobRecord) async throws {
        let job = try await store.updateJob(id: queued.id, action: "job.start", detail: "attempt \(queued.attempts + 1)") {
            $0.state = .running; $0.startedAt = $0.startedAt ?? Date(); $0.attempts += 1
        }
        events.publish(JobStatus(job))
        let flag = CancelFlag()
        running[job.id] = (job.owner, flag)
        lastStart[job.owner] = Date()
        Gauge(label: "permafrost_jobs_running").record(running.count)
        logger.info("job started", metadata: ["job": "\(job.id)", "owner": "\(job.owner)", "attempt": "\(job.attempts)"])
        let runner = self.runner, store = self.store, events = self.events
        let parameters: JobParameters
        do {
            parameters = try JSONDecoder().decode(JobParameters.self, from: Data(job.parameters.utf8))
        } catch {
            try await complete(job.id, outcome: .failure(JobStop.failed("the stored job parameters are unreadable: \(error)")))
            return
        }
        let thread = Thread {
            let outcome: Result<FineTuneReport, Error>
            let lastWrite = Mutex<Date>(.distantPast)
            do {
                outcome = .success(try runner.run(job: job, parameters: parameters, isCancelled: { flag.isSet }) { p in
                    Counter(label: "permafrost_training_steps_total").increment()
                    // At most 4 database writes a second per job; every step still reaches the SSE streams.
                    var status = JobStatus(job)
                    status.state = .running; status.step = p.step; status.loss = p.loss
                    status.message = String(format: "%.2f steps/s", p.stepsPerSecond)
                    events.publish(status)
                    let due = lastWrite.withLock { last in
                        if Date().timeIntervalSince(last) >= 0.25 || p.step == p.totalSteps { last = Date(); return true }
                        return false
                    }
                    if due {
                        let message = status.message
                        _ = try? store.pool.write { db in
                            try db.execute(sql: "UPDATE job SET step = ?, loss = ?, message = ? WHERE id = ?",
                                           arguments: [p.step, p.loss, message, job.id])
                        }
                    }
                })
            } catch {
                outcome = .failure(error)
            }
            let sendable = SendableOutcome(outcome: outcome)
            Task { try? await self.complete(job.id, outcome: sendable.outcome) }
        }
        // The engine's backward pass recurses through the graph; give it a deep stack.
        thread.stackSize = 64 << 20
        thread.name = "job-\(job.id.prefix(8))"
        thread.start()
    }

    struct SendableOutcome: @unchecked Sendable { var outcome: Result<FineTuneReport, Error> }

    private func complete(_ id: String, outcome: Result<FineTuneReport, Error>) async throws {
        running[id] = nil
        Gauge(label: "permafrost_jobs_running").record(running.count)
        switch outcome {
        case let .success(report):
            let files = JobFiles(root: runner.dataRoot, id: id)
            let reportDigest = try sha256Hex(of: files.report)
            let record = try await store.updateJob(id: id, action: "job.succeed", detail: "delta \(report.deltaSHA256 ?? "")") {
                $0.state = .succeeded; $0.step = report.steps; $0.finishedAt = Date(); $0.loss = report.finalLoss
                $0.deltaSHA256 = report.deltaSHA256; $0.reportSHA256 = reportDigest
                $0.message = "all \(report.guardedTensors.count) guarded tensors bit-identical to the base"
            }
            events.publish(JobStatus(record))
            Counter(label: "permafrost_jobs_finished_total", dimensions: [("state", "succeeded")]).increment()
            logger.info("job succeeded", metadata: ["job": "\(id)"])
        case let .failure(error):
            let state: JobState
            if case JobStop.cancelled = error { state = .cancelled } else { state = .failed }
            try await finish(id, state: state, message: "\(error)")
            logger.warning("job ended", metadata: ["job": "\(id)", "state": "\(state.rawValue)", "reason": "\(error)"])
        }
        try await pump()
    }

    private func finish(_ id: String, state: JobState, message: String) async throws {
        let record = try await store.updateJob(id: id, action: "job.\(state.rawValue)", detail: message) {
            $0.state = state; $0.finishedAt = Date(); $0.message = message
        }
        events.publish(JobStatus(record))
        Counter(label: "permafrost_jobs_finished_total", dimensions: [("state", state.rawValue)]).increment()
    }
}
