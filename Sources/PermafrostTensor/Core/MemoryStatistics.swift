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
}
