import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A real `permafrost serve` process on loopback, over a tiny base UNet (28×28, 16 slots) and a
/// guard signed for it in a fresh temporary folder.
final class ServiceHarness: @unchecked Sendable {
    let root: URL
    let data: URL
    let base: URL
    let guardURL: URL
    let publicKey: URL
    var manifest: GuardManifest
    /// Every tensor of the base, in checkpoint order.
    let tensorNames: [String]
    var process: Process?
    var port = 0
    var extraArguments: [String]
    let session: URLSession

    static var executable: URL {
        let bundle = Bundle(for: ServiceHarness.self).bundleURL
        for directory in [bundle, bundle.deletingLastPathComponent()] {
            let candidate = directory.appendingPathComponent("permafrost")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return bundle.appendingPathComponent("permafrost")
    }

    static func tinyConfig() -> UNet2DConfig {
        var c = UNet2DConfig()
        c.sampleSize = 28; c.inChannels = 1; c.outChannels = 1
        c.blockOutChannels = [8, 16]; c.layersPerBlock = 1
        c.downBlockTypes = ["DownBlock2D", "AttnDownBlock2D"]; c.upBlockTypes = ["AttnUpBlock2D", "UpBlock2D"]
        c.normNumGroups = 4; c.attentionHeadDim = 4; c.numClassEmbeds = 16
        return c
    }

    /// Tensors the test guard freezes: the conditioning path and the first down block.
    static func isGuarded(_ name: String) -> Bool {
        name.hasPrefix("conv_in.") || name.hasPrefix("time_embedding.") || name.hasPrefix("class_embedding.") || name.hasPrefix("down_blocks.0.")
    }

    init(extraArguments: [String] = []) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("service-\(UUID().uuidString)")
        data = root.appendingPathComponent("data")
        base = root.appendingPathComponent("base")
        guardURL = root.appendingPathComponent("guard.json")
        publicKey = root.appendingPathComponent("publisher.pub")
        self.extraArguments = extraArguments
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let model = try UNet2DModel(config: Self.tinyConfig(), seed: 7)
        try model.save(directory: base)
        _ = try GuardKeys.generate(privateKeyURL: root.appendingPathComponent("publisher.key"), publicKeyURL: publicKey)
        tensorNames = model.namedParameters().map(\.name)
        let frozen = Set(tensorNames.filter(Self.isGuarded))
        manifest = try GuardManifest(model: model, frozen: frozen, baseSHA256: try sha256Hex(of: base.appendingPathComponent(UNet2DModel.weightsFileName)),
                                     settings: ["purpose": "service tests"])
        try manifest.sign(with: try GuardKeys.privateKey(from: root.appendingPathComponent("publisher.key")))
        try manifest.write(to: guardURL)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = 128
        configuration.timeoutIntervalForRequest = 120
        session = URLSession(configuration: configuration)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: root)
    }

    /// Runs a CLI command to its end; returns its exit status and output.
    @discardableResult
    func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    func createToken(_ name: String) throws -> String {
        let (status, output) = try cli(["serve", "tokens", "create", "--data", data.path, "--name", name, "--quiet"])
        XCTAssertEqual(status, 0, output)
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts the server and waits for its "listening on" line.
    func start(port requested: Int = 0) throws {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["serve", "start", "--data", data.path, "--base", base.path, "--guard", guardURL.path,
                             "--publisher-key", publicKey.path, "--port", String(requested), "--threads", "1", "--log-level", "warning"] + extraArguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        var buffer = Data()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            let text = String(decoding: buffer, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.contains("listening on") }), let value = line.split(separator: ":").last.flatMap({ Int($0) }) {
                port = value
                return
            }
        }
        throw NSError(domain: "ServiceHarness", code: 1, userInfo: [NSLocalizedDescriptionKey: "server did not start: \(String(decoding: buffer, as: UTF8.self))"])
    }

    func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// SIGKILL: no shutdown code runs.
    func kill() {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    struct Reply {
        var status: Int
        var body: Data
        var headers: [String: String]
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
        var list: [[String: Any]] { ((try? JSONSerialization.jsonObject(with: body)) as? [[String: Any]]) ?? [] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func request(_ method: String, _ path: String, token: String?, body: Data? = nil, contentType: String? = nil,
                 headers: [String: String] = [:]) async throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        for (key, value) in headers { request.setValue(value, forHTTPHeaderField: key) }
        request.httpBody = body
        let (data, response) = try await session.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (key, value) in http.allHeaderFields { fields[String(describing: key).lowercased()] = String(describing: value) }
        return Reply(status: http.statusCode, body: data, headers: fields)
    }

    func json(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

    // MARK: Training sets

    /// `count` 28×28 images (smooth random blobs) with labels cycling through `labels`.
    static func images(count: Int, labels: [Int], seed: UInt64 = 1) -> LabeledImages {
        var g = PhiloxGenerator(seed: seed)
        var pixels = [UInt8](repeating: 0, count: count * 784)
        for i in 0..<count {
            let cx = Float(g.nextUInt32() % 16 + 6), cy = Float(g.nextUInt32() % 16 + 6)
            for y in 0..<28 { for x in 0..<28 {
                let d = ((Float(x) - cx) * (Float(x) - cx) + (Float(y) - cy) * (Float(y) - cy)) / 30
                pixels[i * 784 + y * 28 + x] = UInt8(255 * Foundation.exp(-d))
            } }
        }
        return LabeledImages(pixels: pixels, labels: (0..<count).map { labels[$0 % labels.count] }, height: 28, width: 28)
    }

    /// A gzip stream of `data` (zlib's deflate inside gzip's header and trailer).
    static func gzip(_ data: Data) -> Data {
        let bytes = [UInt8](data)
        let zlib = Compression.deflate(bytes, level: 9)
        var out = Data([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])
        out.append(contentsOf: zlib[2..<(zlib.count - 4)])
        withUnsafeBytes(of: Compression.crc32(bytes).littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: bytes.count).littleEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// A multipart/form-data body with the given parts.
    static func multipart(_ parts: [(name: String, data: Data)], boundary: String = "permafrost-test-boundary") -> (Data, String) {
        var body = Data()
        for part in parts {
            body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(part.name)\"; filename=\"\(part.name).idx\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8))
            body.append(part.data)
            body.append(Data("\r\n".utf8))
        }
        body.append(Data("--\(boundary)--\r\n".utf8))
        return (body, "multipart/form-data; boundary=\(boundary)")
    }

    func upload(_ images: LabeledImages, token: String, name: String = "set") async throws -> Reply {
        let files = images.idxFiles()
        let (body, type) = Self.multipart([("images", files.images), ("labels", files.labels)])
        return try await request("POST", "/v1/uploads?name=\(name)", token: token, body: body, contentType: type)
    }

    /// Polls until the job reaches a terminal state (or `timeout`).
    func waitForJob(_ id: String, token: String, timeout: TimeInterval = 300, until: (([String: Any]) -> Bool)? = nil) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let status = try await request("GET", "/v1/jobs/\(id)", token: token).json
            if let until { if until(status) { return status } } else if ["succeeded", "failed", "cancelled"].contains(status["state"] as? String ?? "") { return status }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        XCTFail("job \(id) did not finish in \(timeout) s")
        return [:]
    }

    /// Folder sizes, to prove rejected uploads leave nothing behind.
    func uploadsFolderEntries() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: data.appendingPathComponent("uploads").path)) ?? []).sorted()
    }
}
