import Crypto
import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostService
import PermafrostTensor
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The enforced fine-tuning service, driven over HTTP as a user would: a real server process on loopback.
final class ServiceEndToEndTests: XCTestCase {
    /// Token → upload → job → progress (SSE) → download → the delta verified against the guard.
    func testUploadTrainDownloadAndVerifyAgainstTheGuard() async throws {
        let harness = try ServiceHarness()
        let alice = try harness.createToken("alice")
        try harness.start()

        let upload = try await harness.upload(ServiceHarness.images(count: 48, labels: [6, 7]), token: alice, name: "sixes-and-sevens")
        XCTAssertEqual(upload.status, 201, upload.text)
        XCTAssertEqual(upload.json["images"] as? Int, 48)
        XCTAssertEqual(upload.json["class_slots"] as? [Int], [6, 7])
        let uploadID = try XCTUnwrap(upload.json["id"] as? String)

        let created = try await harness.request("POST", "/v1/jobs", token: alice,
                                                body: harness.json(["upload_id": uploadID, "steps": 12, "batch_size": 4, "learning_rate": 0.002, "seed": 3]))
        XCTAssertEqual(created.status, 201, created.text)
        let jobID = try XCTUnwrap(created.json["id"] as? String)
        XCTAssertEqual(created.headers["location"], "/v1/jobs/\(jobID)")

        // The event stream reports progress and ends with the terminal state.
        let events = try await harness.request("GET", "/v1/jobs/\(jobID)/events", token: alice)
        XCTAssertEqual(events.status, 200)
        XCTAssertTrue(events.headers["content-type"]?.hasPrefix("text/event-stream") ?? false)
        let payloads = events.text.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8)) as? [String: Any] }
        XCTAssertGreaterThanOrEqual(payloads.count, 2, events.text)
        let steps = payloads.compactMap { $0["step"] as? Int }
        XCTAssertEqual(steps, steps.sorted(), "progress never goes backwards")
        XCTAssertEqual(payloads.last?["state"] as? String, "succeeded", events.text)
        XCTAssertTrue(events.text.contains("event: end"))

        let status = try await harness.request("GET", "/v1/jobs/\(jobID)", token: alice).json
        XCTAssertEqual(status["state"] as? String, "succeeded")
        XCTAssertEqual(status["step"] as? Int, 12)

        let delta = try await harness.request("GET", "/v1/jobs/\(jobID)/delta", token: alice)
        XCTAssertEqual(delta.status, 200)
        XCTAssertEqual(delta.headers["x-content-sha256"], sha256Hex(delta.body))
        XCTAssertEqual(status["delta_sha256"] as? String, sha256Hex(delta.body))
        let report = try await harness.request("GET", "/v1/jobs/\(jobID)/report", token: alice).json
        XCTAssertEqual(report["guarded_tensors_bit_identical"] as? Bool, true)
        XCTAssertEqual(report["delta_sha256"] as? String, sha256Hex(delta.body))
        XCTAssertEqual((report["guarded_tensors"] as? [[String: Any]])?.count, harness.manifest.frozen.count)
        XCTAssertEqual(report["changed_guarded_tensors"] as? [String], [])
        XCTAssertEqual(report["job"] as? String, jobID)
        // Both downloads are in the audit log, attributed to their owner.
        let downloads = try ServiceStore(dataDirectory: harness.data).auditLog().filter { $0.action == "job.download" && $0.target == jobID }
        XCTAssertEqual(Set(downloads.compactMap(\.detail)), ["delta.safetensors", "report.json"])

        // Independent check on the user's side: the delta holds no guarded tensor, applies to the
        // base, and the result's guarded tensors hash to the signed manifest's digests.
        let deltaURL = harness.root.appendingPathComponent("downloaded.safetensors")
        try delta.body.write(to: deltaURL)
        let file = try SafetensorsFile(contentsOf: deltaURL)
        XCTAssertTrue(Set(file.names).isDisjoint(with: harness.manifest.frozen), "no guarded tensor in the delta")
        XCTAssertFalse(file.names.isEmpty)
        let model = try UNet2DModel(config: ServiceHarness.tinyConfig())
        try model.apply(harness.manifest.plan)
        try DeltaCheckpoint.load(base: harness.base.appendingPathComponent(UNet2DModel.weightsFileName), delta: deltaURL, into: model)
        XCTAssertEqual(try harness.manifest.changedTensors(in: model), [])
        let original = try UNet2DModel(directory: harness.base)
        let moved = file.names.filter { name in model.parameter(named: name)!.value.scalars != original.parameter(named: name)!.value.scalars }
        XCTAssertFalse(moved.isEmpty, "training changed the trainable tensors")

        // Metrics in Prometheus text format count the work.
        let metrics = try await harness.request("GET", "/metrics", token: nil)
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.text.contains("permafrost_training_steps_total 12"), metrics.text)
        XCTAssertTrue(metrics.text.contains("permafrost_jobs_finished_total{state=\"succeeded\"} 1"), metrics.text)
        let spec = try await harness.request("GET", "/openapi.yaml", token: nil)
        XCTAssertTrue(spec.text.hasPrefix("openapi: 3"), "the served API description")
    }

    /// `"method": "lora"`: an adapter on a guarded layer is refused (403, naming the tensor); on free
    /// layers the job returns a PEFT adapter folder, digest-checked file by file, that loads onto the
    /// guarded base; the report names the layers and proves the guard held.
    func testLoRAJobsReturnAPEFTAdapterAndNeverTouchTheGuard() async throws {
        let harness = try ServiceHarness()
        let alice = try harness.createToken("alice")
        try harness.start()
        let upload = try await harness.upload(ServiceHarness.images(count: 32, labels: [6, 7]), token: alice, name: "lora-set")
        let uploadID = try XCTUnwrap(upload.json["id"] as? String)
        let base = try UNet2DModel(directory: harness.base)
        let layers = base.namedModules().compactMap { entry in (entry.module as? any LowRankAdaptable).map { (entry.name, $0.adaptedWeights.map { entry.name + "." + $0.name }) } }
        let guarded = try XCTUnwrap(layers.first { $0.1.contains { harness.manifest.frozen.contains($0) } })
        let free = try XCTUnwrap(layers.first { !$0.1.contains { harness.manifest.frozen.contains($0) } })

        let refused = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(
            ["upload_id": uploadID, "steps": 4, "batch_size": 4, "method": "lora", "lora_targets": [guarded.0]]))
        XCTAssertEqual(refused.status, 403, refused.text)
        XCTAssert(refused.text.contains(guarded.1[0]) && refused.text.contains("guard"), refused.text)
        for (body, fragment) in [(["upload_id": uploadID, "lora_rank": 4] as [String: Any], "needs \\\"method\\\": \\\"lora\\\""),
                                 (["upload_id": uploadID, "method": "dora"], "'method' must be"),
                                 (["upload_id": uploadID, "method": "lora", "lora_targets": ["*.nothing_here"]], "matches no Linear")] {
            let bad = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(body))
            XCTAssertEqual(bad.status, 422, bad.text)
            XCTAssert(bad.text.contains(fragment), "\(bad.text) should contain \(fragment)")
        }

        let created = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(
            ["upload_id": uploadID, "steps": 4, "batch_size": 4, "method": "lora", "lora_targets": [free.0], "lora_rank": 2]))
        XCTAssertEqual(created.status, 201, created.text)
        let jobID = try XCTUnwrap(created.json["id"] as? String)
        let events = try await harness.request("GET", "/v1/jobs/\(jobID)/events", token: alice)
        XCTAssert(events.text.contains("\"state\":\"succeeded\""), events.text)

        let folder = harness.root.appendingPathComponent("downloaded-adapter")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in [PEFTAdapter.weightsFileName, PEFTAdapter.configurationFileName] {
            let file = try await harness.request("GET", "/v1/jobs/\(jobID)/adapter/\(name)", token: alice)
            XCTAssertEqual(file.status, 200, file.text)
            XCTAssertEqual(file.headers["x-content-sha256"], sha256Hex(file.body))
            try file.body.write(to: folder.appendingPathComponent(name))
        }
        let delta = try await harness.request("GET", "/v1/jobs/\(jobID)/delta", token: alice)
        XCTAssertEqual(delta.body, try Data(contentsOf: folder.appendingPathComponent(PEFTAdapter.weightsFileName)), "a LoRA job's delta is its adapter")
        let report = try await harness.request("GET", "/v1/jobs/\(jobID)/report", token: alice).json
        XCTAssertEqual(report["guarded_tensors_bit_identical"] as? Bool, true)
        XCTAssertEqual(report["lora_targets"] as? [String], [free.0])
        XCTAssertEqual(report["adapter_config_sha256"] as? String, sha256Hex(try Data(contentsOf: folder.appendingPathComponent(PEFTAdapter.configurationFileName))))

        let adapter = try PEFTAdapter(directory: folder)
        XCTAssertEqual(adapter.modules, [free.0])
        XCTAssertEqual(adapter.configuration.rank, 2)
        try base.apply(harness.manifest.plan)
        try adapter.attach(to: base)
        XCTAssertGreaterThan(adapter.tensors["\(free.0).lora_B.weight"]!.scalars.map(abs).max()!, 0, "B trained away from zero")
        try base.mergeLowRankAdapters()
        XCTAssertEqual(try harness.manifest.changedTensors(in: base), [], "the adapter changes no guarded tensor")
    }

    /// One slot, Alice queues three jobs and then Bob one: Bob's job runs second, not fourth.
    func testQueueIsFairAcrossUsers() async throws {
        let harness = try ServiceHarness()
        let alice = try harness.createToken("alice"), bob = try harness.createToken("bob")
        try harness.start()
        let aliceSet = try await harness.upload(ServiceHarness.images(count: 8, labels: [1]), token: alice)
        let bobSet = try await harness.upload(ServiceHarness.images(count: 8, labels: [2]), token: bob)
        var aliceJobs: [String] = []
        for _ in 0..<3 {
            let reply = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": aliceSet.json["id"] as! String, "steps": 8, "batch_size": 2]))
            aliceJobs.append(try XCTUnwrap(reply.json["id"] as? String))
        }
        let bobReply = try await harness.request("POST", "/v1/jobs", token: bob, body: harness.json(["upload_id": bobSet.json["id"] as! String, "steps": 8, "batch_size": 2]))
        let bobJob = try XCTUnwrap(bobReply.json["id"] as? String)
        for id in aliceJobs { _ = try await harness.waitForJob(id, token: alice) }
        _ = try await harness.waitForJob(bobJob, token: bob)
        // The audit log records starts in order (second-resolution timestamps could tie).
        let audit = try ServiceStore(path: harness.data.appendingPathComponent("permafrost.sqlite").path).auditLog()
        let order = audit.filter { $0.action == "job.start" }.sorted { ($0.id ?? 0) < ($1.id ?? 0) }.compactMap(\.target)
        XCTAssertEqual(order.first, aliceJobs[0])
        XCTAssertEqual(order.firstIndex(of: bobJob), 1, "Bob's job runs before Alice's second and third")
    }

    /// Asking to unfreeze a guarded tensor is refused, naming it; unknown names get suggestions;
    /// out-of-range hyper-parameters are refused with the range.
    func testJobRequestsAreValidated() async throws {
        let harness = try ServiceHarness()
        let alice = try harness.createToken("alice")
        try harness.start()
        let uploaded = try await harness.upload(ServiceHarness.images(count: 8, labels: [1]), token: alice)
        let uploadID = try XCTUnwrap(uploaded.json["id"] as? String)
        let guarded = try XCTUnwrap(harness.manifest.frozen.first)

        let unfreeze = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "unfreeze": [guarded]]))
        XCTAssertEqual(unfreeze.status, 403)
        XCTAssertEqual(unfreeze.headers["content-type"], "application/problem+json")
        XCTAssertTrue((unfreeze.json["detail"] as? String ?? "").contains(guarded), unfreeze.text)
        XCTAssertEqual(unfreeze.json["title"] as? String, "Tensor is guarded by the publisher")

        let typo = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "freeze": ["conv_out.weigth"]]))
        XCTAssertEqual(typo.status, 422)
        XCTAssertTrue((typo.json["detail"] as? String ?? "").contains("conv_out.weight"), typo.text)

        for (body, fragment) in [(["upload_id": uploadID, "steps": 0], "steps"), (["upload_id": uploadID, "steps": 1_000_000], "steps"),
                                 (["upload_id": uploadID, "learning_rate": 5.0], "learning_rate"), (["upload_id": uploadID, "batch_size": "8"], "batch_size"),
                                 (["upload_id": uploadID, "stepz": 3], "stepz"), (["upload_id": "nope"], "no upload"),
                                 (["upload_id": uploadID, "scheduler": "magic"], "scheduler")] as [([String: Any], String)] {
            let reply = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(body))
            XCTAssertEqual(reply.status, 422, "\(body): \(reply.text)")
            XCTAssertTrue((reply.json["detail"] as? String ?? "").contains(fragment), "\(body): \(reply.text)")
        }
        let everything = try await harness.request("POST", "/v1/jobs", token: alice,
                                                   body: harness.json(["upload_id": uploadID, "freeze": harness.tensorNames.filter { !harness.manifest.frozen.contains($0) }]))
        XCTAssertEqual(everything.status, 422)
        XCTAssertTrue((everything.json["detail"] as? String ?? "").contains("nothing would train"), everything.text)
        let notJSON = try await harness.request("POST", "/v1/jobs", token: alice, body: Data("{steps".utf8))
        XCTAssertEqual(notJSON.status, 400)
        let jobs = try await harness.request("GET", "/v1/jobs", token: alice)
        XCTAssertEqual(jobs.list.count, 0, "no refused request created a job")

        // Cancelling a job stops it; a cancelled job has no results.
        let long = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "steps": 2000, "batch_size": 2]))
        let id = try XCTUnwrap(long.json["id"] as? String)
        let cancel = try await harness.request("POST", "/v1/jobs/\(id)/cancel", token: alice)
        XCTAssertEqual(cancel.status, 202, cancel.text)
        let final = try await harness.waitForJob(id, token: alice)
        XCTAssertEqual(final["state"] as? String, "cancelled")
        XCTAssertTrue((final["message"] as? String ?? "").contains("cancelled by the user"))
        let delta = try await harness.request("GET", "/v1/jobs/\(id)/delta", token: alice)
        XCTAssertEqual(delta.status, 409)
        let again = try await harness.request("POST", "/v1/jobs/\(id)/cancel", token: alice)
        XCTAssertEqual(again.status, 409)
    }

    /// A server killed with SIGKILL mid-job resumes the job from its last checkpoint after a restart;
    /// the database and every finished artifact stay intact.
    func testKilledServerResumesTheJobAndKeepsFinishedArtifacts() async throws {
        let harness = try ServiceHarness(extraArguments: ["--checkpoint-every", "5"])
        let alice = try harness.createToken("alice")
        try harness.start()
        let uploaded = try await harness.upload(ServiceHarness.images(count: 32, labels: [3, 4]), token: alice)
        let uploadID = try XCTUnwrap(uploaded.json["id"] as? String)

        let firstReply = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "steps": 6, "batch_size": 2]))
        let first = try XCTUnwrap(firstReply.json["id"] as? String)
        let done = try await harness.waitForJob(first, token: alice)
        XCTAssertEqual(done["state"] as? String, "succeeded")
        let files = JobFiles(root: harness.data, id: first)
        let deltaDigest = try sha256Hex(of: files.delta), reportDigest = try sha256Hex(of: files.report)
        XCTAssertEqual(done["delta_sha256"] as? String, deltaDigest)

        let secondReply = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "steps": 80, "batch_size": 2]))
        let second = try XCTUnwrap(secondReply.json["id"] as? String)
        _ = try await harness.waitForJob(second, token: alice, timeout: 120) { ($0["step"] as? Int ?? 0) >= 12 }
        let secondFiles = JobFiles(root: harness.data, id: second)
        XCTAssertTrue(secondFiles.hasCheckpoint, "a checkpoint exists before the kill")
        harness.kill()

        // The database is consistent after the kill.
        do {
            let store = try ServiceStore(path: harness.data.appendingPathComponent("permafrost.sqlite").path)
            XCTAssertEqual(try store.integrityCheck(), ["ok"])
        }
        try harness.start()
        let resumed = try await harness.waitForJob(second, token: alice, timeout: 600)
        XCTAssertEqual(resumed["state"] as? String, "succeeded", "\(resumed)")
        XCTAssertEqual(resumed["attempts"] as? Int, 2)
        let report = try await harness.request("GET", "/v1/jobs/\(second)/report", token: alice).json
        let from = try XCTUnwrap(report["resumed_from_step"] as? Int, "the second attempt resumed from a checkpoint")
        XCTAssertGreaterThanOrEqual(from, 5)
        XCTAssertEqual(from % 5, 0)
        XCTAssertEqual(report["guarded_tensors_bit_identical"] as? Bool, true)

        // The first job's artifacts are untouched and still served.
        XCTAssertEqual(try sha256Hex(of: files.delta), deltaDigest)
        XCTAssertEqual(try sha256Hex(of: files.report), reportDigest)
        let delta = try await harness.request("GET", "/v1/jobs/\(first)/delta", token: alice)
        XCTAssertEqual(delta.status, 200)
        XCTAssertEqual(sha256Hex(delta.body), deltaDigest)
        let audit = try ServiceStore(path: harness.data.appendingPathComponent("permafrost.sqlite").path).auditLog()
        XCTAssertTrue(audit.contains { $0.action == "job.recover" && $0.target == second }, "the recovery is in the audit log")
    }
}

/// Authentication, isolation between users, and hostile uploads.
final class ServiceSecurityTests: XCTestCase {
    func testTokensAndIsolation() async throws {
        let harness = try ServiceHarness()
        let alice = try harness.createToken("alice"), bob = try harness.createToken("bob")
        try harness.start()
        let upload = try await harness.upload(ServiceHarness.images(count: 8, labels: [2]), token: alice)
        let uploadID = try XCTUnwrap(upload.json["id"] as? String)
        let job = try await harness.request("POST", "/v1/jobs", token: alice, body: harness.json(["upload_id": uploadID, "steps": 3, "batch_size": 2]))
        let jobID = try XCTUnwrap(job.json["id"] as? String)
        _ = try await harness.waitForJob(jobID, token: alice)

        for path in ["/v1/uploads", "/v1/jobs", "/v1/jobs/\(jobID)", "/v1/jobs/\(jobID)/delta", "/v1/guard"] {
            let none = try await harness.request("GET", path, token: nil)
            XCTAssertEqual(none.status, 401, path)
            XCTAssertFalse(none.text.contains(uploadID) || none.text.contains("alice"), "nothing leaks without a token")
            let wrong = try await harness.request("GET", path, token: "pft_not-a-real-token")
            XCTAssertEqual(wrong.status, 401, path)
            XCTAssertNotNil(wrong.headers["www-authenticate"])
            let malformed = try await harness.request("GET", path, token: nil, headers: ["Authorization": "Basic YWxpY2U6eA=="])
            XCTAssertEqual(malformed.status, 401, path)
        }
        // Bob sees none of Alice's objects, and a foreign id answers exactly like a missing one.
        let reply1 = try await harness.request("GET", "/v1/uploads", token: bob)
        XCTAssertEqual(reply1.list.count, 0)
        let reply2 = try await harness.request("GET", "/v1/jobs", token: bob)
        XCTAssertEqual(reply2.list.count, 0)
        for suffix in ["", "/delta", "/report", "/events"] {
            let foreign = try await harness.request("GET", "/v1/jobs/\(jobID)\(suffix)", token: bob)
            let missing = try await harness.request("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000\(suffix)", token: bob)
            XCTAssertEqual(foreign.status, 404, suffix)
            XCTAssertEqual(missing.status, 404, suffix)
            XCTAssertEqual(foreign.json["title"] as? String, missing.json["title"] as? String)
            XCTAssertFalse(foreign.text.contains("succeeded") || foreign.text.contains(uploadID), foreign.text)
        }
        let reply3 = try await harness.request("POST", "/v1/jobs/\(jobID)/cancel", token: bob)
        XCTAssertEqual(reply3.status, 404)
        let reply4 = try await harness.request("GET", "/v1/uploads/\(uploadID)", token: bob)
        XCTAssertEqual(reply4.status, 404)
        let borrowed = try await harness.request("POST", "/v1/jobs", token: bob, body: harness.json(["upload_id": uploadID]))
        XCTAssertEqual(borrowed.status, 422, "Bob cannot train on Alice's upload")
        let reply5 = try await harness.request("GET", "/v1/jobs", token: bob)
        XCTAssertEqual(reply5.list.count, 0)

        // A revoked token stops working at once.
        XCTAssertEqual(try harness.cli(["serve", "tokens", "revoke", "--data", harness.data.path, "--name", "bob"]).status, 0)
        let reply6 = try await harness.request("GET", "/v1/jobs", token: bob)
        XCTAssertEqual(reply6.status, 401)
        // The database never holds a secret.
        let tokens = try ServiceStore(path: harness.data.appendingPathComponent("permafrost.sqlite").path).tokens()
        XCTAssertFalse(tokens.contains { $0.secretSHA256 == alice || $0.secretSHA256.contains(alice) })
        XCTAssertEqual(tokens.first { $0.name == "alice" }?.secretSHA256, TokenSecret.digest(alice))
    }

    func testHostileUploadsAreRefusedAndLeaveNothingBehind() async throws {
        let harness = try ServiceHarness(extraArguments: ["--max-upload-bytes", "200000"])
        let alice = try harness.createToken("alice")
        try harness.start()
        let good = ServiceHarness.images(count: 4, labels: [1]).idxFiles()
        func idx(_ images: Data, _ labels: Data) -> (Data, String) { ServiceHarness.multipart([("images", images), ("labels", labels)]) }
        func word(_ value: UInt32) -> Data { withUnsafeBytes(of: value.bigEndian) { Data($0) } }
        let gzipBomb = ServiceHarness.gzip(Data(count: 100_000_000))
        let wrongShape = word(0x803) + word(2) + word(32) + word(32) + Data(count: 2 * 32 * 32)
        let cases: [(String, Data, String, Int, String)] = [
            ("bad magic", idx(Data([0, 0, 9, 9]) + good.images.dropFirst(4), good.labels).0, idx(good.images, good.labels).1, 422, "magic"),
            ("truncated", idx(good.images.prefix(good.images.count - 100), good.labels).0, idx(good.images, good.labels).1, 422, "truncated"),
            ("count mismatch", idx(good.images, word(0x801) + word(3) + Data([1, 1, 1])).0, idx(good.images, good.labels).1, 422, "labels"),
            ("wrong shape", idx(wrongShape, word(0x801) + word(2) + Data([1, 1])).0, idx(good.images, good.labels).1, 422, "28×28"),
            ("a billion images announced", idx(word(0x803) + word(1_000_000_000) + word(28) + word(28) + Data(count: 784), good.labels).0, idx(good.images, good.labels).1, 422, "truncated"),
            ("gzip bomb", idx(gzipBomb, good.labels).0, idx(good.images, good.labels).1, 422, "decompression bomb"),
            ("label outside the slots", idx(good.images, word(0x801) + word(4) + Data([1, 1, 1, 99])).0, idx(good.images, good.labels).1, 422, "99"),
            ("missing labels part", ServiceHarness.multipart([("images", good.images)]).0, ServiceHarness.multipart([]).1, 422, "labels"),
            ("unterminated multipart", Data("--permafrost-test-boundary\r\nContent-Disposition: form-data; name=\"images\"\r\n\r\nabc".utf8), ServiceHarness.multipart([]).1, 422, "truncated"),
            ("not safetensors", Data("hello, world, this is not a tensor file".utf8), "application/octet-stream", 422, "safetensors"),
            ("safetensors header lies", Data([255, 255, 255, 255, 0, 0, 0, 0]) + Data("{}".utf8), "application/octet-stream", 422, "safetensors"),
            ("oversized", Data(count: 300_000), "application/octet-stream", 413, "limit"),
            ("wrong media type", good.images, "text/plain", 415, "multipart"),
            ("empty", Data(), "application/octet-stream", 422, "empty"),
        ]
        let before = harness.uploadsFolderEntries()
        for (label, body, type, status, fragment) in cases {
            let reply = try await harness.request("POST", "/v1/uploads?name=x", token: alice, body: body, contentType: type)
            XCTAssertEqual(reply.status, status, "\(label): \(reply.text)")
            XCTAssertEqual(reply.headers["content-type"], "application/problem+json", label)
            XCTAssertTrue((reply.json["detail"] as? String ?? "").lowercased().contains(fragment.lowercased()), "\(label): \(reply.text)")
        }
        for name in ["../../etc/passwd", "a/b", "..", ".hidden", "x%00y", String(repeating: "n", count: 65)] {
            let (body, type) = idx(good.images, good.labels)
            let encoded = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? name
            let reply = try await harness.request("POST", "/v1/uploads?name=\(encoded)", token: alice, body: body, contentType: type)
            XCTAssertEqual(reply.status, 400, "name \(name): \(reply.text)")
        }
        XCTAssertEqual(harness.uploadsFolderEntries(), before, "refused uploads leave no files")
        let reply7 = try await harness.request("GET", "/v1/uploads", token: alice)
        XCTAssertEqual(reply7.list.count, 0)

        // A safetensors batch (float images in [0, 1], int64 labels) is accepted.
        let images = ServiceHarness.images(count: 3, labels: [5])
        let batch = try SafetensorsWriter.encode([
            .init(name: "images", tensor: Tensor(shape: [3, 1, 28, 28], scalars: images.pixels.map { Float($0) / 255 })),
            .init(name: "labels", int64s: [5, 5, 5], shape: [3]),
        ])
        let accepted = try await harness.request("POST", "/v1/uploads?name=batch.v1", token: alice, body: batch, contentType: "application/octet-stream")
        XCTAssertEqual(accepted.status, 201, accepted.text)
        XCTAssertEqual(accepted.json["format"] as? String, "safetensors")
        XCTAssertEqual(harness.uploadsFolderEntries().count, before.count + 1)
    }
}
