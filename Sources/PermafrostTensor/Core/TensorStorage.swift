#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The reference-counted buffer behind a ``Tensor``.
///
/// Buffers are 64-byte aligned so SIMD loads and BLAS see cache-line aligned data. A storage is shared
/// by tensors that are reshapes of one another; writers copy first (see `Tensor.ensureUniqueStorage`).
@usableFromInline
final class TensorStorage: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutablePointer<Float>
    @usableFromInline let count: Int
    /// Size of the page-mapped block behind a large buffer (0 for a `malloc`ed one).
    private let mappedBytes: Int
    /// For a view: the storage whose elements these are (kept alive by it); `nil` for an owner.
    private let viewed: TensorStorage?

    /// Allocates `count` uninitialised elements. Callers overwrite every element before reading.
    /// Large buffers come from ``LargeBlockCache`` (page-mapped, recycled), small ones from `malloc`.
    @usableFromInline
    init(uninitializedCount count: Int) {
        precondition(count >= 0, "Tensor element count must be non-negative, got \(count)")
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        var raw: UnsafeMutableRawPointer?
        var mapped = 0
        if bytes >= LargeBlockCache.thresholdBytes {
            if let block = LargeBlockCache.allocate(bytes: bytes) { (raw, mapped) = (block.pointer, block.bytes) }
        } else if posix_memalign(&raw, 64, bytes) != 0 {
            raw = nil
        }
        mappedBytes = mapped
        viewed = nil
        guard let raw else {
            fatalError("Permafrost: out of memory allocating \(bytes) bytes for a tensor")
        }
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        MemoryStatistics.recordAllocation(bytes: count * MemoryLayout<Float>.stride)
    }

    /// Elements `offset ..< offset + count` of `parent`, without a copy: the view keeps `parent`
    /// alive, and writing through it writes `parent`'s elements. Only for a parent nothing else
    /// reads any more (a gradient handed out in chunks), since tensors assume unshared writes.
    init(viewing parent: TensorStorage, offset: Int, count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= parent.count,
                     "storage view \(offset)..<\(offset + count) is outside a buffer of \(parent.count) elements")
        self.count = count
        base = parent.base + offset
        mappedBytes = 0
        viewed = parent
    }

    @usableFromInline
    convenience init(repeating value: Float, count: Int) {
        self.init(uninitializedCount: count)
        if value == 0 {
            memset(base, 0, count * MemoryLayout<Float>.stride)
        } else {
            base.initialize(repeating: value, count: count)
        }
    }

    @usableFromInline
    func copy() -> TensorStorage {
        let result = TensorStorage(uninitializedCount: count)
        result.base.update(from: base, count: count)
        return result
    }

    deinit {
        guard viewed == nil else { return }
        MemoryStatistics.recordDeallocation(bytes: count * MemoryLayout<Float>.stride)
        if mappedBytes > 0 {
            LargeBlockCache.release(UnsafeMutableRawPointer(base), bytes: mappedBytes)
        } else {
            free(base)
        }
    }
}
