import Foundation
import PermafrostTensor

/// Writes safetensors files that the Python `safetensors` package (and diffusers, transformers)
/// load unchanged: header keys sorted, `__metadata__` first, header padded with spaces to 8 bytes,
/// data in name order, little-endian.
public enum SafetensorsWriter {
    /// One tensor to store.
    public struct Item: Sendable {
        public var name: String
        public var dtype: SafetensorsDType
        public var shape: [Int]
        public var bytes: [UInt8]

        /// A Float tensor stored as `dtype` (F32, F16, BF16 or F64), rounding to nearest even.
        public init(name: String, tensor: Tensor, dtype: SafetensorsDType = .f32) {
            precondition(dtype.isFloatingPoint, "Item(tensor:) stores floating-point dtypes; use Item(name:int64s:shape:) for integers")
            self.name = name
            self.dtype = dtype
            shape = tensor.shape
            var out = [UInt8]()
            out.reserveCapacity(tensor.count * dtype.byteSize)
            tensor.withUnsafeBufferPointer { values in
                for value in values {
                    switch dtype {
                    case .f32: withUnsafeBytes(of: value.bitPattern.littleEndian) { out += $0 }
                    case .f16: withUnsafeBytes(of: HalfPrecision.halfBits(from: value).littleEndian) { out += $0 }
                    case .bf16: withUnsafeBytes(of: HalfPrecision.bfloatBits(from: value).littleEndian) { out += $0 }
                    default: withUnsafeBytes(of: Double(value).bitPattern.littleEndian) { out += $0 }
                    }
                }
            }
            bytes = out
        }

        /// An I64 tensor.
        public init(name: String, int64s: [Int64], shape: [Int]) {
            precondition(Shape.count(shape) == int64s.count, "shape \(shape) does not hold \(int64s.count) values")
            self.name = name
            dtype = .i64
            self.shape = shape
            bytes = int64s.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        }

        /// Raw bytes already in `dtype`'s little-endian encoding.
        public init(name: String, dtype: SafetensorsDType, shape: [Int], bytes: [UInt8]) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
    }

    /// The file's bytes.
    public static func encode(_ items: [Item], metadata: [String: String] = [:]) throws(SafetensorsError) -> Data {
        var seen = Set<String>()
        for item in items {
            guard !item.name.isEmpty, item.name != "__metadata__" else { throw .invalidName(item.name) }
            guard seen.insert(item.name).inserted else { throw .invalidEntry(tensor: item.name, reason: "stored twice") }
            let expected = Shape.count(item.shape) * item.dtype.byteSize
            guard expected == item.bytes.count else {
                throw .sizeMismatch(tensor: item.name, dtype: item.dtype.rawValue, shape: item.shape, expectedBytes: expected, storedBytes: item.bytes.count)
            }
        }
        let sorted = items.sorted { $0.name < $1.name }
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { jsonQuoted($0) + ":" + jsonQuoted(metadata[$0]!) }
            fields.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for item in sorted {
            let end = offset + item.bytes.count
            fields.append(jsonQuoted(item.name) + ":{\"dtype\":\"\(item.dtype.rawValue)\",\"shape\":[" +
                          item.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var data = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header)
        for item in sorted { data.append(contentsOf: item.bytes) }
        return data
    }

    /// Writes `items` to `url` atomically: a reader sees the old file or the complete new one,
    /// never a partial write.
    public static func write(_ items: [Item], metadata: [String: String] = [:], to url: URL) throws(SafetensorsError) {
        let data = try encode(items, metadata: metadata)
        do { try AtomicFile.write(data, to: url) } catch { throw .unwritable(path: url.path, reason: error.reason) }
    }

    /// Writes named Float tensors, all stored as `dtype`.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], dtype: SafetensorsDType = .f32,
                             metadata: [String: String] = [:], to url: URL) throws(SafetensorsError) {
        try write(tensors.map { Item(name: $0.name, tensor: $0.tensor, dtype: dtype) }, metadata: metadata, to: url)
    }
}
