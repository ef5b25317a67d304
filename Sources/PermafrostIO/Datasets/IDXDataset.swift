import Foundation
import PermafrostTensor

/// Why an image data set could not be read.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case compression(path: String, reason: String)
    case badMagic(path: String, found: UInt32, expected: UInt32)
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    case countMismatch(images: Int, labels: Int)
    case invalidShape(path: String, reason: String)
    case notFound(String)
    case temporaryFile(String)
    case invalidMapping(String)
    case invalidTable(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read '\(path)': \(reason)"
        case let .compression(path, reason): return "'\(path)': \(reason)"
        case let .badMagic(path, found, expected): return "'\(path)' is not an IDX file of the expected kind (magic 0x\(String(found, radix: 16)), expected 0x\(String(expected, radix: 16)))"
        case let .truncated(path, expected, actual): return "'\(path)' is truncated: its header announces \(expected) bytes of data, it holds \(actual)"
        case let .countMismatch(images, labels): return "\(images) images but \(labels) labels"
        case let .invalidShape(path, reason): return "'\(path)': \(reason)"
        case let .notFound(reason): return reason
        case let .temporaryFile(reason): return "the on-disk image cache failed: \(reason)"
        case let .invalidMapping(reason): return reason
        case let .invalidTable(reason): return reason
        }
    }
}

/// Labelled 8-bit grayscale images (MNIST's IDX format, raw or gzip'd).
public struct LabeledImages: Sendable {
    public var pixels: [UInt8]
    public var labels: [Int]
    public var height: Int
    public var width: Int
    public var count: Int { labels.count }

    public init(pixels: [UInt8], labels: [Int], height: Int, width: Int) {
        precondition(pixels.count == labels.count * height * width, "pixels do not match \(labels.count) images of \(height)×\(width)")
        self.pixels = pixels; self.labels = labels; self.height = height; self.width = width
    }

    /// Reads an images file and a labels file.
    public init(images: URL, labels: URL) throws(DatasetError) {
        let (imageBytes, imageHeader) = try Self.read(images, magic: 0x803, dimensions: 3)
        let (labelBytes, labelHeader) = try Self.read(labels, magic: 0x801, dimensions: 1)
        guard imageHeader[0] == labelHeader[0] else { throw .countMismatch(images: imageHeader[0], labels: labelHeader[0]) }
        self.init(pixels: imageBytes, labels: labelBytes.map(Int.init), height: imageHeader[1], width: imageHeader[2])
    }

    /// Reads `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` in `directory`.
    public init(directory: URL, split: String) throws(DatasetError) {
        let files = try Self.locate(directory: directory, split: split)
        try self.init(images: files.images, labels: files.labels)
    }

    /// The images and labels files of `split` in `directory` (gzip'd preferred).
    static func locate(directory: URL, split: String) throws(DatasetError) -> (images: URL, labels: URL) {
        func locate(_ name: String) throws(DatasetError) -> URL {
            for candidate in [name + ".gz", name] {
                let url = directory.appendingPathComponent(candidate)
                if FileManager.default.fileExists(atPath: url.path) { return url }
            }
            throw .notFound("no '\(name)' or '\(name).gz' in '\(directory.path)'")
        }
        return (try locate("\(split)-images-idx3-ubyte"), try locate("\(split)-labels-idx1-ubyte"))
    }

    /// Reads an images file and a labels file already in memory (raw or gzip'd), as uploaded. Gzip
    /// streams may expand to at most `inflateLimit` bytes each, so a small hostile file cannot
    /// claim gigabytes.
    public init(imageFile: Data, labelFile: Data, inflateLimit: Int) throws(DatasetError) {
        let (imageBytes, imageHeader) = try Self.decode(imageFile, path: "images", magic: 0x803, dimensions: 3, inflateLimit: inflateLimit)
        let (labelBytes, labelHeader) = try Self.decode(labelFile, path: "labels", magic: 0x801, dimensions: 1, inflateLimit: inflateLimit)
        guard imageHeader[0] == labelHeader[0] else { throw .countMismatch(images: imageHeader[0], labels: labelHeader[0]) }
        self.init(pixels: imageBytes, labels: labelBytes.map(Int.init), height: imageHeader[1], width: imageHeader[2])
    }

    /// The two IDX files of these images (uncompressed): magic, dimensions, then the bytes.
    public func idxFiles() -> (images: Data, labels: Data) {
        func header(_ magic: UInt32, _ sizes: [Int]) -> Data {
            var data = Data()
            for word in [magic] + sizes.map(UInt32.init) { withUnsafeBytes(of: word.bigEndian) { data.append(contentsOf: $0) } }
            return data
        }
        return (header(0x803, [count, height, width]) + Data(pixels), header(0x801, [count]) + Data(labels.map { UInt8(clamping: $0) }))
    }

    static func read(_ url: URL, magic: UInt32, dimensions: Int) throws(DatasetError) -> ([UInt8], [Int]) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: url.path, reason: (error as NSError).localizedDescription) }
        return try decode(data, path: url.path, magic: magic, dimensions: dimensions, inflateLimit: 1 << 31)
    }

    private static func decode(_ file: Data, path: String, magic: UInt32, dimensions: Int, inflateLimit: Int) throws(DatasetError) -> ([UInt8], [Int]) {
        var data = file
        if Compression.isGzip(data) {
            do { data = try Compression.inflate(data, limit: inflateLimit) } catch { throw .compression(path: path, reason: error.description) }
        }
        // Read in place: one copy of the payload, not three (a 20,000-image file is 16 MB).
        let start = data.startIndex, count = data.count
        let header = try Self.header(of: data, path: path, magic: magic, dimensions: dimensions)
        let headerSize = 4 + 4 * dimensions
        let expected = header.reduce(1, *)
        guard count - headerSize >= expected else { throw .truncated(path: path, expectedBytes: expected, actualBytes: count - headerSize) }
        return ([UInt8](data[(start + headerSize)..<(start + headerSize + expected)]), header)
    }

    /// The `dimensions` sizes in the IDX header at the start of `bytes`, checked: the magic number
    /// first (so a file of the wrong kind says so even when short), then a whole header, then image
    /// sizes in 1…4096.
    static func header(of bytes: some Collection<UInt8>, path: String, magic: UInt32, dimensions: Int) throws(DatasetError) -> [Int] {
        let headerSize = 4 + 4 * dimensions
        let prefix = Array(bytes.prefix(headerSize))
        func word(_ i: Int) -> UInt32 { prefix[i..<(i + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        guard prefix.count >= 4 else { throw .truncated(path: path, expectedBytes: headerSize, actualBytes: prefix.count) }
        guard word(0) == magic else { throw .badMagic(path: path, found: word(0), expected: magic) }
        guard prefix.count >= headerSize else { throw .truncated(path: path, expectedBytes: headerSize, actualBytes: prefix.count) }
        let header = (0..<dimensions).map { Int(word(4 + 4 * $0)) }
        guard header.dropFirst().allSatisfy({ $0 > 0 && $0 <= 4096 }) else { throw .invalidShape(path: path, reason: "image size \(header.dropFirst()) outside 1…4096") }
        return header
    }

    /// The images with these labels, in order.
    public func filtered(_ keep: Set<Int>) -> LabeledImages {
        let indices = labels.indices.filter { keep.contains(labels[$0]) }
        return indices.count == count ? self : selecting(indices)
    }

    /// The images at `indices`.
    public func selecting(_ indices: [Int]) -> LabeledImages {
        let size = height * width
        var pixels = [UInt8]()
        pixels.reserveCapacity(indices.count * size)
        for i in indices { pixels += self.pixels[(i * size)..<((i + 1) * size)] }
        return LabeledImages(pixels: pixels, labels: indices.map { labels[$0] }, height: height, width: width)
    }

    /// Labels remapped (e.g. Fashion-MNIST class 1 → model slot 10).
    public func relabeled(_ map: [Int: Int]) -> LabeledImages {
        LabeledImages(pixels: pixels, labels: labels.map { map[$0] ?? $0 }, height: height, width: width)
    }

    /// Two sets together.
    /// Reads "6:13,7:14" (label → label) for ``relabeled(_:)`` and for slot expectations; "" is no mapping.
    public static func labelMapping(_ text: String) throws(DatasetError) -> [Int: Int] {
        var map: [Int: Int] = [:]
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: ":").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2, let from = parts[0], let to = parts[1], from >= 0, to >= 0, map[from] == nil else {
                throw .invalidMapping("cannot read '\(pair)' in '\(text)': use FROM:TO pairs of labels, each FROM once, e.g. 6:13,7:14")
            }
            map[from] = to
        }
        return map
    }

    public static func + (lhs: LabeledImages, rhs: LabeledImages) -> LabeledImages {
        precondition(lhs.height == rhs.height && lhs.width == rhs.width, "cannot join \(lhs.height)×\(lhs.width) and \(rhs.height)×\(rhs.width) images")
        return LabeledImages(pixels: lhs.pixels + rhs.pixels, labels: lhs.labels + rhs.labels, height: lhs.height, width: lhs.width)
    }

    /// Images `indices` as a `[n, 1, H, W]` tensor scaled to [−1, 1] (diffusion) or [0, 1].
    public func batch(_ indices: [Int], range: ClosedRange<Float> = -1...1) -> Tensor {
        let size = height * width
        return pixels.withUnsafeBufferPointer { p in
            Self.tensor(images: indices.count, height: height, width: width, range: range) { p.baseAddress! + indices[$0] * size }
        }
    }

    /// A `[n, 1, H, W]` tensor of `n` images whose bytes start at `image(row)`, scaled to `range`.
    static func tensor(images n: Int, height: Int, width: Int, range: ClosedRange<Float>,
                       image: (Int) -> UnsafePointer<UInt8>) -> Tensor {
        let size = height * width
        let scale = (range.upperBound - range.lowerBound) / 255
        return Tensor(shape: [n, 1, height, width]) { out in
            for row in 0..<n {
                let bytes = image(row)
                for j in 0..<size { out[row * size + j] = range.lowerBound + scale * Float(bytes[j]) }
            }
        }
    }
}
