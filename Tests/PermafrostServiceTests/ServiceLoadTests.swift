import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// 50 clients polling job status and 5 uploading training sets, all at once, while a job trains.
/// `PERMAFROST_LOAD_SECONDS` sets the duration (60 by default, as the acceptance asks);
/// `PERMAFROST_LOAD_REPORT` names a JSON file to write the latency figures to.
final class ServiceLoadTests: XCTestCase {
    func testFiftyPollersAndFiveUploadersWhileAJobTrains() async throws {
        let seconds = Double(ProcessInfo.processInfo.environment["PERMAFROST_LOAD_SECONDS"] ?? "") ?? 60
        let harness = try ServiceHarness()
        let alice = try harness.createToken("alice")
        try harness.start()
        let uploaded = try await harness.upload(ServiceHarness.images(count: 64, labels: [6, 7]), token: alice)
        let uploadID = try XCTUnwrap(uploaded.json["id"] as? String)
        let created = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "steps": 2000, "batch_size": 16]))
        let jobID = try XCTUnwrap(created.json["id"] as? String)
        _ = try await harness.waitForJob(jobID, token: alice, timeout: 60) { ($0["step"] as? Int ?? 0) >= 1 }
        let stepBefore = try await harness.request("GET", "/v1/jobs/\(jobID)", token: alice).json["step"] as? Int ?? 0

        struct Sample: Sendable { var latency: Double; var ok: Bool; var kind: String; var detail: String }
        let deadline = Date().addingTimeInterval(seconds)
        let uploadBody = ServiceHarness.multipart([("images", ServiceHarness.images(count: 32, labels: [1]).idxFiles().images),
                                                   ("labels", ServiceHarness.images(count: 32, labels: [1]).idxFiles().labels)])
        let samples = try await withThrowingTaskGroup(of: [Sample].self) { group in
            for client in 0..<55 {
                let uploader = client >= 50
                group.addTask {
                    var mine: [Sample] = []
                    while Date() < deadline {
                        let start = Date()
                        do {
                            let reply = uploader
                                ? try await harness.request("POST", "/v1/uploads?name=load-\(client)", token: alice, body: uploadBody.0, contentType: uploadBody.1)
                                : try await harness.request("GET", "/v1/jobs/\(jobID)", token: alice)
                            let ok = reply.status == (uploader ? 201 : 200)
                            mine.append(Sample(latency: Date().timeIntervalSince(start), ok: ok, kind: uploader ? "upload" : "poll", detail: ok ? "" : "\(reply.status) \(reply.text)"))
                        } catch {
                            mine.append(Sample(latency: Date().timeIntervalSince(start), ok: false, kind: uploader ? "upload" : "poll", detail: "\(error)"))
                        }
                        if !uploader { try? await Task.sleep(nanoseconds: 50_000_000) }
                    }
                    return mine
                }
            }
            var all: [Sample] = []
            for try await part in group { all += part }
            return all
        }
        let stepAfter = try await harness.request("GET", "/v1/jobs/\(jobID)", token: alice).json["step"] as? Int ?? 0
        _ = try await harness.request("POST", "/v1/jobs/\(jobID)/cancel", token: alice)

        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
        }
        var figures: [String: Any] = ["seconds": seconds, "training_steps_during_load": stepAfter - stepBefore]
        for kind in ["poll", "upload"] {
            let latencies = samples.filter { $0.kind == kind }.map(\.latency)
            let line = String(format: "%@: %d requests, %d errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms", kind, latencies.count,
                              samples.filter { $0.kind == kind && !$0.ok }.count, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
                              (latencies.max() ?? 0) * 1000)
            print("load test " + line)
            figures[kind] = ["requests": latencies.count, "errors": samples.filter { $0.kind == kind && !$0.ok }.count,
                             "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000, "max_ms": (latencies.max() ?? 0) * 1000]
        }
        print("load test: the job trained \(stepAfter - stepBefore) steps during the load")
        if let path = ProcessInfo.processInfo.environment["PERMAFROST_LOAD_REPORT"] {
            try JSONSerialization.data(withJSONObject: figures, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        }
        let failures = samples.filter { !$0.ok }
        XCTAssertEqual(failures.count, 0, "first errors: \(failures.prefix(3).map(\.detail))")
        XCTAssertGreaterThan(samples.filter { $0.kind == "poll" }.count, 50, "every poller got answers")
        XCTAssertGreaterThan(samples.filter { $0.kind == "upload" }.count, 5, "every uploader got answers")
        XCTAssertGreaterThan(stepAfter, stepBefore, "the job kept training under load")
    }
}
