import Foundation
import PermafrostIO
import PermafrostService
import XCTest

/// The service's store and upload parsing in process, without a server: what the HTTP tests reach
/// only through a running `permafrost serve`.
final class ServiceStoreTests: XCTestCase {
    func temporaryStore() throws -> (ServiceStore, URL) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString)")
        return (try ServiceStore(dataDirectory: folder), folder)
    }

    func testTokensAreStoredAsDigestsRevokedByNameAndAudited() async throws {
        let (store, folder) = try temporaryStore()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (record, secret) = try store.createToken(name: "alice")
        XCTAssertTrue(secret.hasPrefix(TokenSecret.prefix))
        let found = try await store.token(secretDigest: TokenSecret.digest(secret))
        XCTAssertEqual(found?.id, record.id)
        let wrong = try await store.token(secretDigest: TokenSecret.digest(secret + "x"))
        XCTAssertNil(wrong)
        // The secret itself is nowhere in the database file.
        let bytes = try Data(contentsOf: folder.appendingPathComponent("permafrost.sqlite"))
        XCTAssertNil(bytes.range(of: Data(secret.utf8)))
        XCTAssertThrowsError(try store.createToken(name: "alice"), "names are unique")

        try store.revokeToken(name: "alice")
        let revoked = try await store.token(secretDigest: TokenSecret.digest(secret))
        XCTAssertNil(revoked, "a revoked token no longer authenticates")
        XCTAssertThrowsError(try store.revokeToken(name: "bob"))
        let actions = try store.auditLog().map(\.action)
        XCTAssertEqual(actions.filter { $0.hasPrefix("token.") }.sorted(), ["token.create", "token.revoke"])
    }

    func testJobsAreSeparatedByOwnerAndEveryChangeIsAudited() async throws {
        let (store, folder) = try temporaryStore()
        defer { try? FileManager.default.removeItem(at: folder) }
        // Owners are token ids: uploads and jobs reference the token table.
        let alice = try store.createToken(name: "alice").0.id, bob = try store.createToken(name: "bob").0.id
        for (id, owner) in [("u1", alice), ("u2", bob)] {
            try await store.insert(upload: UploadRecord(id: id, owner: owner, name: id, format: "idx", images: 3, classSlots: "6,7",
                                                        bytes: 100, sha256: "00", createdAt: Date()))
        }
        let a = try await store.createJob(owner: alice, uploadID: "u1", parameters: "{}", totalSteps: 10)
        let b = try await store.createJob(owner: bob, uploadID: "u2", parameters: "{}", totalSteps: 10)
        let alices = try await store.jobs(owner: alice), hidden = try await store.job(id: b.id, owner: alice)
        XCTAssertEqual(alices.map(\.id), [a.id])
        XCTAssertNil(hidden, "another user's job is invisible")
        let queued = try await store.queuedJobs()
        XCTAssertEqual(Set(queued.map(\.id)), [a.id, b.id])
        _ = try await store.updateJob(id: a.id, actor: alice, action: "job.cancel", detail: "test") { $0.state = .cancelled }
        let stillQueued = try await store.queuedJobs()
        XCTAssertEqual(stillQueued.map(\.id), [b.id])
        try await store.recordAudit(actor: bob, action: "job.download", target: b.id, detail: "delta.safetensors")
        let log = try store.auditLog()
        XCTAssertTrue(log.contains { $0.action == "job.cancel" && $0.actor == alice && $0.target == a.id })
        XCTAssertTrue(log.contains { $0.action == "job.download" && $0.actor == bob && $0.detail == "delta.safetensors" })
        XCTAssertEqual(log.filter { $0.action == "job.create" }.count, 2)
        XCTAssertEqual(try store.integrityCheck(), ["ok"])
    }
}

final class UploadParserTests: XCTestCase {
    /// An IDX images file and labels file for `labels.count` 28×28 images.
    func idx(labels: [UInt8], size: Int = 28) -> (images: Data, labels: Data) {
        func header(_ magic: UInt32, _ dims: [UInt32]) -> Data {
            Data(([magic] + dims).flatMap { value in withUnsafeBytes(of: value.bigEndian) { Array($0) } })
        }
        var images = header(0x803, [UInt32(labels.count), UInt32(size), UInt32(size)])
        images.append(Data((0..<(labels.count * size * size)).map { UInt8($0 % 251) }))
        var labelFile = header(0x801, [UInt32(labels.count)])
        labelFile.append(Data(labels))
        return (images, labelFile)
    }

    func multipart(_ parts: [(String, Data)]) -> (Data, String) {
        let boundary = "permafrost-test-boundary"
        var body = Data()
        for (name, data) in parts {
            body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"; filename=\"\(name).idx\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8))
            body.append(data)
            body.append(Data("\r\n".utf8))
        }
        body.append(Data("--\(boundary)--\r\n".utf8))
        return (body, "multipart/form-data; boundary=\(boundary)")
    }

    func testParsesIDXPartsAndRefusesWhatTheBaseCannotTrain() throws {
        let parser = UploadParser(limits: UploadLimits())
        let files = idx(labels: [6, 7, 13])
        let (body, type) = multipart([("images", files.images), ("labels", files.labels)])
        let (images, format) = try parser.parse(body: body, contentType: type)
        XCTAssertEqual(format, .idx)
        XCTAssertEqual(images.labels, [6, 7, 13])
        XCTAssertEqual(images.pixels, files.images.dropFirst(16).map { $0 })

        func refusal(_ body: Data, _ type: String?) -> String {
            do { _ = try parser.parse(body: body, contentType: type); return "accepted" } catch { return error.detail }
        }
        let badSlot = idx(labels: [6, 16])
        XCTAssertTrue(refusal(multipart([("images", badSlot.images), ("labels", badSlot.labels)]).0, type).contains("label 16"))
        let small = idx(labels: [1], size: 14)
        XCTAssertTrue(refusal(multipart([("images", small.images), ("labels", small.labels)]).0, type).contains("14×14"))
        XCTAssertTrue(refusal(multipart([("images", files.images)]).0, type).contains("'labels'"))
        XCTAssertTrue(refusal(multipart([("images", files.images.dropLast(5)), ("labels", files.labels)]).0, type).contains("truncated"))
        XCTAssertTrue(refusal(Data(), type).contains("empty"))
        XCTAssertTrue(refusal(body, "text/plain").contains("multipart/form-data"))
    }
}
