import Foundation
import PermafrostTensor

/// A safetensors file, memory-mapped and fully validated on open.
///
/// Validation: the header length fits the file (and 100 MB); the header is UTF-8 JSON (strict,
/// bounded parser); every entry has a known dtype, a non-negative shape and offsets inside the data
/// section whose span equals dtype size × element count; entries neither overlap nor leave bytes
/// unreferenced. Tensors are converted to Float32 on demand (F32, F16, BF16, F64).
public struct SafetensorsFile: @unchecked Sendable {
    /// One stored tensor.
    public struct Entry: Sendable, Hashable {
        public var name: String
        public var dtype: SafetensorsDType
        public var shape: [Int]
        /// Byte range within the data section.
        public var byteRange: Range<Int>
    }

    /// Entries sorted by name.
    public let entries: [Entry]
    /// The `__metadata__` string map.
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int
    private let index: [String: Int]

    /// Largest header accepted (the Rust reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000

    /// Memory-maps and validates the file at `url`.
    public init(contentsOf url: URL) throws(SafetensorsError) {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw .unreadable(path: url.path, reason: (error as NSError).localizedDescription)
        }
        try self.init(bytes: data)
    }

    /// Validates an in-memory file.
    public init(bytes data: Data) throws(SafetensorsError) {
        guard data.count >= 8 else { throw .truncated(fileSize: data.count) }
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
        guard length <= UInt64(Self.maximumHeaderLength), length <= UInt64(data.count - 8) else {
            throw .headerLengthOutOfBounds(length: length, fileSize: data.count)
        }
        let headerLength = Int(length)
        let headerBytes = [UInt8](data[(data.startIndex + 8)..<(data.startIndex + 8 + headerLength)])
        guard String(validating: headerBytes, as: UTF8.self) != nil else { throw .headerNotUTF8 }
        let json: JSONValue
        do { json = try HeaderJSONParser.parse(headerBytes) } catch { throw .malformedHeader(offset: error.offset, reason: error.message) }
        guard case let .object(members) = json else { throw .headerNotAnObject }

        let dataSize = data.count - 8 - headerLength
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in members {
            if name == "__metadata__" {
                guard case let .object(pairs) = value else { throw .invalidMetadata(reason: "it is not an object") }
                for (key, item) in pairs {
                    guard case let .string(text) = item else { throw .invalidMetadata(reason: "the value of '\(key)' is not a string") }
                    metadata[key] = text
                }
                continue
            }
            entries.append(try Self.entry(name: name, value: value, dataSize: dataSize))
        }

        // No overlaps and no unreferenced bytes: sorted by offset, each entry starts where the last ended.
        let byOffset = entries.sorted { ($0.byteRange.lowerBound, $0.byteRange.upperBound, $0.name) < ($1.byteRange.lowerBound, $1.byteRange.upperBound, $1.name) }
        var cursor = 0
        var previous: Entry?
        for entry in byOffset {
            if entry.byteRange.lowerBound < cursor, let previous {
                throw .overlappingTensors(first: previous.name, second: entry.name)
            }
            if entry.byteRange.lowerBound > cursor { throw .unreferencedBytes(begin: cursor, end: entry.byteRange.lowerBound) }
            cursor = entry.byteRange.upperBound
            if !entry.byteRange.isEmpty { previous = entry }
        }
        if cursor != dataSize { throw .unreferencedBytes(begin: cursor, end: dataSize) }

        self.entries = entries.sorted { $0.name < $1.name }
        self.metadata = metadata
        self.data = data
        self.dataStart = 8 + headerLength
        self.index = Dictionary(uniqueKeysWithValues: self.entries.enumerated().map { ($0.element.name, $0.offset) })
    }

    private static func entry(name: String, value: JSONValue, dataSize: Int) throws(SafetensorsError) -> Entry {
        guard !name.isEmpty else { throw .invalidName(name) }
        guard case let .object(fields) = value else { throw .invalidEntry(tensor: name, reason: "the entry is not an object") }
        var dtypeText: String?, shapeValue: [JSONValue]?, offsetsValue: [JSONValue]?
        for (key, field) in fields {
            switch key {
            case "dtype":
                guard case let .string(text) = field else { throw .invalidEntry(tensor: name, reason: "dtype is not a string") }
                dtypeText = text
            case "shape":
                guard case let .array(items) = field else { throw .invalidShape(tensor: name, reason: "shape is not an array") }
                shapeValue = items
            case "data_offsets":
                guard case let .array(items) = field else { throw .invalidEntry(tensor: name, reason: "data_offsets is not an array") }
                offsetsValue = items
            default:
                throw .invalidEntry(tensor: name, reason: "unexpected field '\(key)'")
            }
        }
        guard let dtypeText else { throw .invalidEntry(tensor: name, reason: "dtype is missing") }
        guard let dtype = SafetensorsDType(rawValue: dtypeText) else { throw .unsupportedDType(tensor: name, dtype: dtypeText) }
        guard let shapeValue else { throw .invalidShape(tensor: name, reason: "shape is missing") }
        guard let offsetsValue else { throw .invalidEntry(tensor: name, reason: "data_offsets is missing") }
        var shape: [Int] = []
        var elements = 1
        for item in shapeValue {
            guard let extent = item.nonNegativeInteger else { throw .invalidShape(tensor: name, reason: "extents must be non-negative integers") }
            let (product, overflow) = elements.multipliedReportingOverflow(by: extent)
            guard !overflow, product <= Int(Int32.max) * 64 else { throw .invalidShape(tensor: name, reason: "element count overflows") }
            elements = product
            shape.append(extent)
        }
        guard offsetsValue.count == 2, let begin = offsetsValue[0].nonNegativeInteger, let end = offsetsValue[1].nonNegativeInteger else {
            throw .invalidEntry(tensor: name, reason: "data_offsets must be two non-negative integers")
        }
        guard begin <= end, end <= dataSize else { throw .offsetsOutOfRange(tensor: name, begin: begin, end: end, dataSize: dataSize) }
        let expected = elements * dtype.byteSize
        guard expected == end - begin else {
            throw .sizeMismatch(tensor: name, dtype: dtype.rawValue, shape: shape, expectedBytes: expected, storedBytes: end - begin)
        }
        return Entry(name: name, dtype: dtype, shape: shape, byteRange: begin..<end)
    }

    /// The entry named `name`, or an error listing the closest names.
    public func entry(named name: String) throws(SafetensorsError) -> Entry {
        guard let position = index[name] else {
            throw .tensorNotFound(name: name, closest: closestNames(to: name, among: entries.map(\.name)))
        }
        return entries[position]
    }

    /// Names of all tensors, sorted.
    public var names: [String] { entries.map(\.name) }

    /// The stored bytes of a tensor, exactly as in the file (for digests).
    public func storedBytes(named name: String) throws(SafetensorsError) -> Data {
        let entry = try entry(named: name)
        return data[(data.startIndex + dataStart + entry.byteRange.lowerBound)..<(data.startIndex + dataStart + entry.byteRange.upperBound)]
    }

    /// A floating-point tensor converted to Float32.
    public func tensor(named name: String) throws(SafetensorsError) -> Tensor {
        let entry = try entry(named: name)
        guard entry.dtype.isFloatingPoint else { throw .notFloatingPoint(tensor: name, dtype: entry.dtype.rawValue) }
        let count = Shape.count(entry.shape)
        let start = data.startIndex + dataStart + entry.byteRange.lowerBound
        return data.withUnsafeBytes { raw in
            let bytes = raw.baseAddress!.advanced(by: start - data.startIndex)
            return Tensor(shape: entry.shape) { out in
                switch entry.dtype {
                case .f32:
                    for i in 0..<count { out[i] = Float(bitPattern: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
                case .f16:
                    for i in 0..<count { out[i] = HalfPrecision.float(fromHalf: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
                case .bf16:
                    for i in 0..<count { out[i] = HalfPrecision.float(fromBFloat: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
                case .f64:
                    for i in 0..<count { out[i] = Float(Double(bitPattern: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian)) }
                default:
                    break
                }
            }
        }
    }

    /// An integer tensor (I64, I32, I16, I8, U8, U16, U32; U64 when it fits) as `Int64`s.
    public func int64s(named name: String) throws(SafetensorsError) -> [Int64] {
        let entry = try entry(named: name)
        let count = Shape.count(entry.shape)
        let start = data.startIndex + dataStart + entry.byteRange.lowerBound - data.startIndex
        let values: [Int64]? = data.withUnsafeBytes { raw in
            let bytes = raw.baseAddress!.advanced(by: start)
            switch entry.dtype {
            case .i64: return (0..<count).map { Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
            case .u64:
                let unsigned = (0..<count).map { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)) }
                return unsigned.allSatisfy { $0 <= UInt64(Int64.max) } ? unsigned.map { Int64($0) } : nil
            case .i32: return (0..<count).map { Int64(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
            case .u32: return (0..<count).map { Int64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
            case .i16: return (0..<count).map { Int64(Int16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self))) }
            case .u16: return (0..<count).map { Int64(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
            case .i8: return (0..<count).map { Int64(bytes.load(fromByteOffset: $0, as: Int8.self)) }
            case .u8, .bool: return (0..<count).map { Int64(bytes.load(fromByteOffset: $0, as: UInt8.self)) }
            default: return nil
            }
        }
        guard let values else { throw .notInteger(tensor: name, dtype: entry.dtype.rawValue) }
        return values
    }
}
