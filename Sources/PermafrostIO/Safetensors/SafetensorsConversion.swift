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
