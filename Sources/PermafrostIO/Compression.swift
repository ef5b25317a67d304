import CZlib
import Foundation

/// zlib/gzip through the system zlib.
public enum Compression {
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case corrupt(String)
        case tooLarge(limit: Int)
        public var description: String {
            switch self {
            case let .corrupt(reason): return "the compressed data is corrupt (\(reason))"
            case let .tooLarge(limit): return "the data inflates past \(limit) bytes (refused: possible decompression bomb)"
            }
        }
    }

    /// Whether `data` starts with the gzip magic bytes.
    public static func isGzip(_ data: Data) -> Bool { data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B }

    /// Inflates gzip or zlib data, refusing output larger than `limit` bytes.
    public static func inflate(_ data: Data, limit: Int = 1 << 30) throws(Failure) -> Data {
        var output = Data()
        // A gzip member ends with its uncompressed size (mod 2³²): reserving it up front spares the
        // doubling growth, whose old and new buffers are both resident at the moment of copying. It is
        // only a hint (a hostile file may lie), so it is bounded by `limit` and deflate's 1032:1 ratio.
        if let size = gzipSizeHint(data), size <= limit, size <= 1032 * data.count { output.reserveCapacity(size) }
        try inflate(data, limit: limit) { piece in
            output.append(contentsOf: piece)
            return true
        }
        return output
    }

    /// Inflates gzip or zlib data piece by piece (64 KiB at most each), so the whole output never
    /// needs to exist at once. `consume` returns `false` to stop early (then nothing is thrown: the
    /// caller knows why it stopped). Output past `limit` bytes is refused.
    public static func inflate(_ data: Data, limit: Int = 1 << 30, consume: (UnsafeRawBufferPointer) -> Bool) throws(Failure) {
        var stream = z_stream()
        // 15 + 32: accept both zlib and gzip headers.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { throw .corrupt("inflateInit failed") }
        defer { inflateEnd(&stream) }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var status: Int32 = Z_OK
        var failure: Failure?
        var total = 0
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: raw.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(raw.count)
            repeat {
                let produced = chunk.withUnsafeMutableBufferPointer { buffer -> Int in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = uInt(buffer.count)
                    status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    return buffer.count - Int(stream.avail_out)
                }
                if status != Z_OK && status != Z_STREAM_END {
                    failure = .corrupt(status == Z_BUF_ERROR ? "truncated" : "zlib status \(status)")
                    return
                }
                total += produced
                if total > limit { failure = .tooLarge(limit: limit); return }
                if produced > 0, !chunk.withUnsafeBytes({ consume(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) }) { return }
                if status != Z_STREAM_END && stream.avail_in == 0 && produced == 0 { failure = .corrupt("truncated"); return }
            } while status != Z_STREAM_END
        }
        if let failure { throw failure }
    }

    /// The uncompressed size a gzip stream's trailer states, if `data` is one.
    static func gzipSizeHint(_ data: Data) -> Int? {
        guard isGzip(data), data.count >= 18 else { return nil }
        let end = data.endIndex
        return (1...4).reduce(0) { $0 << 8 | Int(data[end - $1]) }
    }

    /// zlib-compresses `data` (for PNG's IDAT).
    public static func deflate(_ data: [UInt8], level: Int32 = 6) -> [UInt8] {
        var length = compressBound(uLong(data.count))
        var output = [UInt8](repeating: 0, count: Int(length))
        let status = output.withUnsafeMutableBufferPointer { out in
            data.withUnsafeBufferPointer { input in compress2(out.baseAddress, &length, input.baseAddress, uLong(data.count), level) }
        }
        precondition(status == Z_OK, "zlib compress2 failed with status \(status)")
        return Array(output[0..<Int(length)])
    }

    /// CRC-32 as PNG and gzip use it.
    public static func crc32(_ bytes: [UInt8], initial: UInt = 0) -> UInt32 {
        UInt32(bytes.withUnsafeBufferPointer { CZlib.crc32(uLong(initial), $0.baseAddress, uInt($0.count)) })
    }
}
