import Foundation
import PermafrostIO

/// Limits an upload must respect; everything outside them is refused before anything is written.
public struct UploadLimits: Sendable {
    /// Largest request body accepted.
    public var maxBodyBytes = 64 << 20
    /// Largest size a gzip'd IDX file may expand to.
    public var maxDecodedBytes = 64 << 20
    public var maxImages = 60_000
    /// Images must be `imageSize`×`imageSize` (the base model's sample size).
    public var imageSize = 28
    /// Labels are class slots of the base model: 0..<classSlots.
    public var classSlots = 16
    public init() {}
}

/// Turns an upload body into labelled images, validating every field against `UploadLimits`.
///
/// Two formats: `multipart/form-data` with parts `images` and `labels` (MNIST IDX files, raw or
/// gzip'd), or a safetensors batch file with `images` (U8 [N,H,W] / [N,1,H,W], or F32 in [0, 1]) and
/// `labels` (any integer dtype, [N]).
public struct UploadParser: Sendable {
    public var limits: UploadLimits
    public init(limits: UploadLimits) { self.limits = limits }

    public enum Format: String, Sendable { case idx, safetensors }

    public func parse(body: Data, contentType: String?) throws(ServiceError) -> (LabeledImages, Format) {
        guard !body.isEmpty else { throw .invalidUpload("the request body is empty") }
        let type = (contentType ?? "").lowercased()
        let images: LabeledImages, format: Format
        if type.hasPrefix("multipart/form-data") {
            let parts = try MultipartForm.parse(body: body, contentType: contentType ?? "")
            guard let imageFile = parts["images"] else { throw .invalidUpload("multipart upload lacks an 'images' part (an IDX images file)") }
            guard let labelFile = parts["labels"] else { throw .invalidUpload("multipart upload lacks a 'labels' part (an IDX labels file)") }
            do {
                images = try LabeledImages(imageFile: imageFile, labelFile: labelFile, inflateLimit: limits.maxDecodedBytes)
            } catch {
                throw .invalidUpload(error.description)
            }
            format = .idx
        } else if type.hasPrefix("application/octet-stream") || type.hasPrefix("application/vnd.safetensors") || type.isEmpty {
            images = try parseSafetensors(body)
            format = .safetensors
        } else {
            throw .unsupportedMediaType("send multipart/form-data (IDX 'images' and 'labels' parts) or application/octet-stream (a safetensors batch), not '\(contentType ?? "")'")
        }
        try validate(images)
        return (images, format)
    }

    func validate(_ images: LabeledImages) throws(ServiceError) {
        guard images.count > 0 else { throw .invalidUpload("the training set holds no images") }
        guard images.count <= limits.maxImages else { throw .invalidUpload("\(images.count) images exceed the limit of \(limits.maxImages)") }
        guard images.height == limits.imageSize, images.width == limits.imageSize else {
            throw .invalidUpload("images are \(images.height)×\(images.width); the base model takes \(limits.imageSize)×\(limits.imageSize)")
        }
        if let bad = images.labels.first(where: { $0 < 0 || $0 >= limits.classSlots }) {
            throw .invalidUpload("label \(bad) is not a class slot of the base model (0…\(limits.classSlots - 1))")
        }
    }

    func parseSafetensors(_ body: Data) throws(ServiceError) -> LabeledImages {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(bytes: body) } catch { throw .invalidUpload("not a safetensors batch: \(error.description)") }
        let imageEntry: SafetensorsFile.Entry, labelEntry: SafetensorsFile.Entry
        do {
            imageEntry = try file.entry(named: "images")
            labelEntry = try file.entry(named: "labels")
        } catch {
            throw .invalidUpload("a safetensors batch needs tensors 'images' and 'labels': \(error.description)")
        }
        let shape = imageEntry.shape
        let valid = shape.count == 3 || (shape.count == 4 && shape[1] == 1)
        guard valid, let count = shape.first else { throw .invalidUpload("'images' must be [N, H, W] or [N, 1, H, W], got \(shape)") }
        guard labelEntry.shape == [count] else { throw .invalidUpload("'labels' must be [\(count)] to match 'images', got \(labelEntry.shape)") }
        let height = shape[shape.count - 2], width = shape[shape.count - 1]
        guard height == limits.imageSize, width == limits.imageSize else {
            throw .invalidUpload("images are \(height)×\(width); the base model takes \(limits.imageSize)×\(limits.imageSize)")
        }
        guard count <= limits.maxImages else { throw .invalidUpload("\(count) images exceed the limit of \(limits.maxImages)") }
        var pixels: [UInt8]
        do {
            switch imageEntry.dtype {
            case .u8:
                pixels = [UInt8](try file.storedBytes(named: "images"))
            case .f32, .f16, .bf16, .f64:
                let values = try file.tensor(named: "images").scalars
                if let bad = values.first(where: { !$0.isFinite || $0 < 0 || $0 > 1 }) {
                    throw ServiceError.invalidUpload("float 'images' must lie in [0, 1]; found \(bad)")
                }
                pixels = values.map { UInt8(($0 * 255).rounded()) }
            default:
                throw ServiceError.invalidUpload("'images' must be U8 or a float dtype, got \(imageEntry.dtype.rawValue)")
            }
        } catch let error as ServiceError {
            throw error
        } catch {
            throw .invalidUpload("cannot read 'images': \(error)")
        }
        let labels: [Int64]
        do { labels = try file.int64s(named: "labels") } catch { throw .invalidUpload("'labels' must hold integers: \(error.description)") }
        guard pixels.count == count * height * width else { throw .invalidUpload("'images' holds \(pixels.count) bytes, expected \(count * height * width)") }
        if let bad = labels.first(where: { $0 < 0 || $0 >= Int64(limits.classSlots) }) {
            throw .invalidUpload("label \(bad) is not a class slot of the base model (0…\(limits.classSlots - 1))")
        }
        return LabeledImages(pixels: pixels, labels: labels.map { Int($0) }, height: height, width: width)
    }
}

/// A strict `multipart/form-data` reader (RFC 7578) for the few named parts an upload carries.
enum MultipartForm {
    static let maximumParts = 8

    static func parse(body: Data, contentType: String) throws(ServiceError) -> [String: Data] {
        guard let boundary = parameter("boundary", in: contentType), !boundary.isEmpty, boundary.count <= 70 else {
            throw .invalidUpload("multipart upload without a valid boundary parameter")
        }
        let bytes = [UInt8](body)
        let delimiter = Array("--\(boundary)".utf8)
        var parts: [String: Data] = [:]
        guard var position = find(delimiter, in: bytes, from: 0) else { throw .invalidUpload("multipart body does not contain its boundary") }
        position += delimiter.count
        while true {
            // After a delimiter: "--" ends the body, CRLF starts a part.
            if position + 2 <= bytes.count, bytes[position] == 45, bytes[position + 1] == 45 { break }
            guard position + 2 <= bytes.count, bytes[position] == 13, bytes[position + 1] == 10 else {
                throw .invalidUpload("malformed multipart body (no line break after a boundary)")
            }
            position += 2
            guard let headerEnd = find([13, 10, 13, 10], in: bytes, from: position) else { throw .invalidUpload("malformed multipart part (headers never end)") }
            let headerText = String(decoding: bytes[position..<headerEnd], as: UTF8.self)
            let contentStart = headerEnd + 4
            guard let next = find([13, 10] + delimiter, in: bytes, from: contentStart) else {
                throw .invalidUpload("multipart body is truncated (a part has no closing boundary)")
            }
            var name: String?
            for line in headerText.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
                name = parameter("name", in: String(line))
            }
            guard let name else { throw .invalidUpload("a multipart part has no Content-Disposition name") }
            guard parts[name] == nil else { throw .invalidUpload("the part '\(name)' appears twice") }
            guard parts.count < maximumParts else { throw .invalidUpload("too many multipart parts") }
            parts[name] = Data(bytes[contentStart..<next])
            position = next + 2 + delimiter.count
        }
        return parts
    }

    /// `key=value` or `key="value"` from a header value's parameters.
    static func parameter(_ key: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let pair = piece.trimmingCharacters(in: .whitespaces)
            guard let equals = pair.firstIndex(of: "="), pair[..<equals].lowercased() == key else { continue }
            var value = String(pair[pair.index(after: equals)...])
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            return value
        }
        return nil
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        let first = needle[0]
        var i = start
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var match = true
                for k in 1..<needle.count where haystack[i + k] != needle[k] { match = false; break }
                if match { return i }
            }
            i += 1
        }
        return nil
    }
}
