#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Process-wide count of bytes held by tensor buffers, with a resettable high-water mark.
///
/// Training commands read it to report peak tensor memory; it counts only tensor storage, not
/// Swift's own allocations, so it is a lower bound of the process's resident memory.
public enum MemoryStatistics {
    private struct State {
        var live = 0
        var peak = 0
    }
    private static let state = Mutex(State())

    static func recordAllocation(bytes: Int) {
        state.withLock {
            $0.live += bytes
            if $0.live > $0.peak { $0.peak = $0.live }
        }
    }

    static func recordDeallocation(bytes: Int) {
        state.withLock { $0.live -= bytes }
    }

    /// Bytes currently held by tensor buffers.
    public static var liveBytes: Int { state.withLock { $0.live } }

    /// The most bytes held at once since the last ``resetPeak()``.
    public static var peakBytes: Int { state.withLock { $0.peak } }

    /// Starts a new high-water mark at the current live byte count.
    public static func resetPeak() {
        state.withLock { $0.peak = $0.live }
    }

    /// Hands memory the process no longer uses back to the system: freed `malloc` pages (glibc
    /// keeps them after a large load, e.g. a decompressed data set) and the tensor blocks cached
    /// for reuse. Training commands call it once before their first step, so the process's
    /// resident memory reflects training rather than loading.
    public static func returnFreeMemoryToSystem() {
        LargeBlockCache.trim()
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }

    /// The process's peak resident set size in MiB (tensors, code, libraries and all).
    public static var peakResidentMegabytes: Double {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024          // kilobytes on Linux
        #else
        getrusage(RUSAGE_SELF, &usage)
        return Double(usage.ru_maxrss) / 1_048_576     // bytes on macOS
        #endif
    }
}

#if os(Linux)
/// glibc's `malloc_trim` (declared in malloc.h, which the Glibc module does not export).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
