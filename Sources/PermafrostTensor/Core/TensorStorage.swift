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

    /// Allocates `count` uninitialised elements. Callers overwrite every element before reading.
    /// Keeps freed tensor memory in the heap instead of returning every large block to the kernel:
    /// glibc maps blocks over its threshold afresh on each allocation, and the page faults that
    /// follow cost a training step several percent. (Peak resident memory is unchanged.)
    private static let allocatorConfigured: Bool = {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 1 << 30)
        _ = glibcMallopt(-1 /* M_TRIM_THRESHOLD */, 1 << 30)
        #endif
        return true
    }()

    @usableFromInline
    init(uninitializedCount count: Int) {
        precondition(count >= 0, "Tensor element count must be non-negative, got \(count)")
        _ = Self.allocatorConfigured
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("Permafrost: out of memory allocating \(bytes) bytes for a tensor")
        }
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        MemoryStatistics.recordAllocation(bytes: count * MemoryLayout<Float>.stride)
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
        MemoryStatistics.recordDeallocation(bytes: count * MemoryLayout<Float>.stride)
        free(base)
    }
}

#if os(Linux)
/// glibc's `mallopt` (declared in malloc.h, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
