import Foundation

/// A long-lived `python3` process running PyTorch, driven line by line over pipes, so our runs and
/// the peer's can be interleaved in one benchmark run without paying interpreter start-up each time.
final class TorchPeer {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var pending = Data()
    /// `torch.__version__` as the peer reported it.
    private(set) var version = ""

    /// Starts the peer, or returns `nil` when `python3 -c "import torch"` does not work.
    init?(script: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-peer-\(getpid()).py")
        do { try script.write(to: file, atomically: true, encoding: .utf8) } catch { return nil }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", file.path]
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
    func request(_ line: String) -> String? {
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
