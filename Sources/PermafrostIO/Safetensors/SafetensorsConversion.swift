import Foundation

extension SafetensorsFile {
    /// Writes this file's tensors to `url` (atomically) with every floating-point tensor in `dtype`;
    /// integer tensors and the metadata are copied unchanged. Returns the number of tensors written.
    @discardableResult
    public func convertFloatingPoint(to dtype: SafetensorsDType, writingTo url: URL) throws -> Int {
        var items: [SafetensorsWriter.Item] = []
        for entry in entries {
            if entry.dtype.isFloatingPoint {
                items.append(.init(name: entry.name, tensor: try tensor(named: entry.name), dtype: dtype))
            } else {
                items.append(.init(name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes: [UInt8](try storedBytes(named: entry.name))))
            }
        }
        try SafetensorsWriter.write(items, metadata: metadata, to: url)
        return items.count
    }
}

extension SafetensorsFile {
    /// One stored tensor: name, dtype, shape, stored byte count and the SHA-256 of its stored bytes.
    public struct InventoryEntry: Codable, Sendable, Equatable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var sha256: String
        public var bytes: Int
    }

    /// Every tensor of the file, in file order, with the digest of its stored bytes (so two files
    /// can be compared tensor by tensor whatever their headers' order).
    public func inventory() throws -> [InventoryEntry] {
        try entries.map { entry in
            InventoryEntry(name: entry.name, dtype: entry.dtype.rawValue, shape: entry.shape,
                           sha256: sha256Hex(try storedBytes(named: entry.name)), bytes: entry.byteRange.count)
        }
    }
}

/// A checkpoint's contents as `permafrost checkpoint inspect` shows them: the file's digest, its
/// metadata, and every tensor with the digest of its stored bytes.
public struct CheckpointInventory: Codable, Sendable {
    public var file: String
    public var sha256: String
    public var metadata: [String: String]
    public var tensors: [SafetensorsFile.InventoryEntry]

    public init(file checkpoint: SafetensorsFile, path: String, sha256: String) throws {
        file = path
        self.sha256 = sha256
        metadata = checkpoint.metadata
        tensors = try checkpoint.inventory()
    }

    /// An aligned table: a header line, the metadata, then name, dtype, shape and SHA-256 per tensor.
    /// One JSON object (sorted keys, paths unescaped).
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public var table: String {
        var lines = ["\(file)  (\(tensors.count) tensors, file SHA-256 \(sha256))"]
        lines += metadata.keys.sorted().map { "  metadata \($0) = \(metadata[$0] ?? "")" }
        let nameWidth = Swift.max(4, tensors.map(\.name.count).max() ?? 0)
        lines.append("  " + "name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  dtype  shape                 sha256")
        for row in tensors {
            let shape = "[" + row.shape.map(String.init).joined(separator: ", ") + "]"
            lines.append("  " + row.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  " + row.dtype.padding(toLength: 5, withPad: " ", startingAt: 0)
                         + "  " + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + "  " + row.sha256)
        }
        return lines.joined(separator: "\n")
    }
}
