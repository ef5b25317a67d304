import Foundation
import PermafrostModels

/// A long-lived `python3` process running PyTorch, driven line by line over pipes, so our runs and
/// the peer's can be interleaved in one benchmark run without paying interpreter start-up each time.
public final class TorchPeer {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var pending = Data()
    /// `torch.__version__` as the peer reported it.
    public private(set) var version = ""

    /// Starts `python3 -u script arguments…`, or returns `nil` when it does not answer `ready`
    /// (no python3, no torch).
    public init?(script: URL, arguments: [String] = []) {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", script.path] + arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        guard let hello = readLine(), hello.hasPrefix("ready") else {
            process.terminate()
            return nil
        }
        version = String(hello.dropFirst("ready ".count))
    }

    /// Sends one command line and returns the peer's one-line answer.
    public func request(_ line: String) -> String? {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
        return readLine()
    }

    private func readLine() -> String? {
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending = Data(pending[(newline + 1)...])
                return line
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            pending.append(chunk)
        }
    }

    deinit {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// The PyTorch peers' Python sources (`Scripts/bench/*.py`), found in `PERMAFROST_SCRIPTS`, in
/// `./Scripts/bench`, or in the source tree this binary was built from.
public enum PeerScripts {
    public static func url(_ name: String) throws -> URL {
        var folders: [URL] = []
        if let custom = ProcessInfo.processInfo.environment["PERMAFROST_SCRIPTS"] { folders.append(URL(fileURLWithPath: custom)) }
        folders.append(URL(fileURLWithPath: "Scripts/bench"))
        // Sources/PermafrostBench/TorchPeer.swift → the package root.
        folders.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/bench"))
        for folder in folders where FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path) {
            return folder.appendingPathComponent(name)
        }
        throw BenchError("the PyTorch peer script \(name) is not in \(folders.map(\.path).joined(separator: ", ")); set PERMAFROST_SCRIPTS to Scripts/bench")
    }

    /// The reference UNet's diffusers config, written where a peer can read it.
    public static func referenceUNetConfig() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-unet-config-\(getpid()).json")
        try UNet2DConfig.mnistReference.jsonData().write(to: url)
        return url
    }
}

/// A benchmark that cannot run as asked.
public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
