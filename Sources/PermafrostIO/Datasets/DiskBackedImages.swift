#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import PermafrostTensor

/// Labelled images that hand out batches: a set held in memory (``LabeledImages``) or one read from
/// disk a batch at a time (``DiskBackedImages``).
public protocol LabeledImageSource {
    /// What reading a batch can throw: `Never` for a set in memory.
    associatedtype BatchFailure: Error
    var count: Int { get }
    var labels: [Int] { get }
    var height: Int { get }
    var width: Int { get }
    /// Images `indices` as a `[n, 1, H, W]` tensor with pixels scaled to `range`.
    func batch(_ indices: [Int], range: ClosedRange<Float>) throws(BatchFailure) -> Tensor
}

extension LabeledImages: LabeledImageSource {
    public typealias BatchFailure = Never
}

/// Labelled 8-bit images kept in an unlinked temporary file and read a batch at a time.
///
/// Why: a training process that holds its data set as bytes pays for it in resident memory on every
/// step — the classifier's 13-class set is 26.5 MB, more than SlimFit's whole tensor peak — while
/// the operating system's page cache serves the same reads for free and does not count against the
/// process. The IDX files are inflated piece by piece straight into the file, so the full set never
/// exists in memory either, not even while loading. The file is unlinked as soon as it is created:
/// nothing is left behind, however the process ends.
public final class DiskBackedImages: LabeledImageSource, @unchecked Sendable {
    /// One IDX pair to take images from: `slots` maps each wanted label to the label it gets
    /// (identity for plain filtering); images with other labels are skipped.
    public struct Part: Sendable {
        public var directory: URL
        public var split: String
        public var slots: [Int: Int]
        public init(directory: URL, split: String, slots: [Int: Int]) {
            self.directory = directory; self.split = split; self.slots = slots
        }
    }

    public typealias BatchFailure = DatasetError
    public let labels: [Int]
    public let height: Int
    public let width: Int
    public var count: Int { labels.count }
    // Immutable after init; `pread` is positional, so batches may be read from several threads.
    private let descriptor: Int32

    /// Streams every part's images into one temporary file in `temporaryDirectory`, in order.
    public init(_ parts: [Part], temporaryDirectory: URL = FileManager.default.temporaryDirectory) throws(DatasetError) {
        var template = Array(temporaryDirectory.appendingPathComponent("permafrost-images-XXXXXX").path.utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else {
            throw .temporaryFile("cannot create a file in '\(temporaryDirectory.path)': \(String(cString: strerror(errno)))")
        }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
        var writer = BufferedWriter(descriptor: descriptor)
        var labels: [Int] = []
        var shape: (height: Int, width: Int)?
        do throws(DatasetError) {
            for part in parts {
                let files = try LabeledImages.locate(directory: part.directory, split: part.split)
                let partLabels = try LabeledImages.read(files.labels, magic: 0x801, dimensions: 1).0
                let keep = partLabels.map { part.slots[Int($0)] }
                let size = try Self.stream(files.images, labelCount: partLabels.count, keep: keep, into: &writer)
                if let shape, shape != size {
                    throw .invalidShape(path: files.images.path,
                                                    reason: "its \(size.height)×\(size.width) images cannot join \(shape.height)×\(shape.width) ones")
                }
                shape = size
                labels += keep.compactMap { $0 }
            }
            try writer.flush()
        } catch {
            close(descriptor)
            throw error
        }
        self.descriptor = descriptor
        self.labels = labels
        (height, width) = shape ?? (28, 28)
    }

    deinit { close(descriptor) }

    public func batch(_ indices: [Int], range: ClosedRange<Float> = -1...1) throws(DatasetError) -> Tensor {
        let size = height * width
        var bytes = [UInt8](repeating: 0, count: indices.count * size)
        var failure: DatasetError?
        bytes.withUnsafeMutableBytes { buffer in
            for (row, index) in indices.enumerated() {
                precondition(index >= 0 && index < count, "image \(index) is outside a set of \(count)")
                var done = 0
                while done < size {
                    let got = pread(descriptor, buffer.baseAddress! + row * size + done, size - done, off_t(index * size + done))
                    if got < 0, errno == EINTR { continue }
                    guard got > 0 else {
                        failure = .temporaryFile("reading image \(index): \(got < 0 ? String(cString: strerror(errno)) : "the file ended early")")
                        return
                    }
                    done += got
                }
            }
        }
        if let failure { throw failure }
        return bytes.withUnsafeBufferPointer { p in
            LabeledImages.tensor(images: indices.count, height: height, width: width, range: range) { p.baseAddress! + $0 * size }
        }
    }

    /// Inflates one IDX images file piece by piece, writing the images whose `keep` entry is set.
    /// Returns the images' size.
    private static func stream(_ url: URL, labelCount: Int, keep: [Int?], into writer: inout BufferedWriter) throws(DatasetError) -> (height: Int, width: Int) {
        let file: Data
        do { file = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw .unreadable(path: url.path, reason: (error as NSError).localizedDescription)
        }
        var reader = IDXImageStream(path: url.path, labelCount: labelCount, keep: keep)
        if Compression.isGzip(file) {
            do {
                try Compression.inflate(file, limit: 1 << 31) { reader.consume($0, writer: &writer) }
            } catch {
                throw .compression(path: url.path, reason: error.description)
            }
        } else {
            _ = file.withUnsafeBytes { reader.consume($0, writer: &writer) }
        }
        return try reader.finish()
    }
}

/// The state of one IDX images file read as a stream: its 16-byte header, then images, each
/// written out or skipped as it passes.
private struct IDXImageStream {
    let path: String
    let labelCount: Int
    let keep: [Int?]
    var headerBytes: [UInt8] = []
    /// `[count, height, width]`, once the whole header has been read and checked.
    var header: [Int]?
    var payloadSeen = 0
    var failure: DatasetError?

    init(path: String, labelCount: Int, keep: [Int?]) {
        self.path = path; self.labelCount = labelCount; self.keep = keep
    }

    /// Takes the next piece of the file; `false` stops the stream (on a bad header or write error).
    mutating func consume(_ piece: UnsafeRawBufferPointer, writer: inout BufferedWriter) -> Bool {
        var offset = 0
        if header == nil {
            offset = min(16 - headerBytes.count, piece.count)
            headerBytes += piece[0..<offset]
            guard headerBytes.count == 16 else { return true }
            do throws(DatasetError) {
                let parsed = try LabeledImages.header(of: headerBytes, path: path, magic: 0x803, dimensions: 3)
                guard parsed[0] == labelCount else { throw .countMismatch(images: parsed[0], labels: labelCount) }
                header = parsed
            } catch {
                failure = error
                return false
            }
        }
        let imageBytes = header![1] * header![2]
        let total = labelCount * imageBytes
        while offset < piece.count && payloadSeen < total {
            let image = payloadSeen / imageBytes, within = payloadSeen % imageBytes
            let n = min(imageBytes - within, piece.count - offset)
            if keep[image] != nil {
                do { try writer.append(UnsafeRawBufferPointer(rebasing: piece[offset..<(offset + n)])) } catch {
                    failure = error
                    return false
                }
            }
            payloadSeen += n
            offset += n
        }
        return true
    }

    func finish() throws(DatasetError) -> (height: Int, width: Int) {
        if let failure { throw failure }
        guard let header else {
            // Shorter than a header: the shared check says whether it is the wrong kind of file or cut short.
            _ = try LabeledImages.header(of: headerBytes, path: path, magic: 0x803, dimensions: 3)
            throw .truncated(path: path, expectedBytes: 16, actualBytes: headerBytes.count)
        }
        let expected = labelCount * header[1] * header[2]
        guard payloadSeen == expected else { throw .truncated(path: path, expectedBytes: expected, actualBytes: payloadSeen) }
        return (header[1], header[2])
    }
}

/// Appends bytes to a file descriptor through a 1 MiB buffer.
private struct BufferedWriter {
    let descriptor: Int32
    var buffer: [UInt8] = []

    init(descriptor: Int32) {
        self.descriptor = descriptor
        buffer.reserveCapacity(1 << 20)
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) throws(DatasetError) {
        if buffer.count + bytes.count > (1 << 20) { try flush() }
        buffer.append(contentsOf: bytes)
    }

    mutating func flush() throws(DatasetError) {
        var failure: DatasetError?
        buffer.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let wrote = write(descriptor, raw.baseAddress! + done, raw.count - done)
                if wrote < 0, errno == EINTR { continue }
                guard wrote > 0 else { failure = .temporaryFile("writing: \(String(cString: strerror(errno)))"); return }
                done += wrote
            }
        }
        if let failure { throw failure }
        buffer.removeAll(keepingCapacity: true)
    }
}
