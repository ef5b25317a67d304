import Foundation

/// PNG writing (8-bit grayscale or RGB) with zlib from the system library.
public enum PNG {
    /// Encodes `pixels` (row-major, `channels` = 1 or 3 bytes per pixel).
    public static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> Data {
        precondition(channels == 1 || channels == 3, "PNG: 1 or 3 channels, got \(channels)")
        precondition(pixels.count == width * height * channels, "PNG: \(pixels.count) bytes for \(width)×\(height)×\(channels)")
        var raw = [UInt8]()
        raw.reserveCapacity((width * channels + 1) * height)
        for y in 0..<height {
            raw.append(0) // filter: none
            raw += pixels[(y * width * channels)..<((y + 1) * width * channels)]
        }
        var data = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        func chunk(_ type: String, _ payload: [UInt8]) {
            let typeBytes = Array(type.utf8)
            withUnsafeBytes(of: UInt32(payload.count).bigEndian) { data.append(contentsOf: $0) }
            data.append(contentsOf: typeBytes)
            data.append(contentsOf: payload)
            withUnsafeBytes(of: Compression.crc32(typeBytes + payload).bigEndian) { data.append(contentsOf: $0) }
        }
        var header = [UInt8]()
        for value in [UInt32(width), UInt32(height)] { withUnsafeBytes(of: value.bigEndian) { header += $0 } }
        header += [8, channels == 1 ? 0 : 2, 0, 0, 0]
        chunk("IHDR", header)
        chunk("IDAT", Compression.deflate(raw))
        chunk("IEND", [])
        return data
    }

    /// Writes a PNG atomically.
    public static func write(to url: URL, width: Int, height: Int, channels: Int, pixels: [UInt8]) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        do { try AtomicFile.write(encode(width: width, height: height, channels: channels, pixels: pixels), to: url) } catch {
            throw SafetensorsError.unwritable(path: url.path, reason: error.reason)
        }
    }
}
