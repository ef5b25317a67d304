import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(CBLAS)
import CBLAS
#endif
import Synchronization

/// The engine's thread pool setting and its fork-join helper.
///
/// The thread count comes from `PERMAFROST_THREADS` (default: the number of cores) and can be
/// changed at run time (the CLI's `--threads`). BLAS itself always runs single-threaded inside this
/// pool, so one setting governs all the engine's parallelism.
public enum Parallel {
    private static let configured = Mutex<Int?>(nil)

    /// Number of threads kernels may use.
    public static var threadCount: Int {
        get {
            configured.withLock { value in
                if let value { return value }
                let initial = defaultThreadCount()
                value = initial
                _ = blasConfigured
                return initial
            }
        }
        set {
            let clamped = max(1, newValue)
            configured.withLock { $0 = clamped }
            _ = blasConfigured
        }
    }

    /// Cores available to the process, or `PERMAFROST_THREADS` when set to a positive integer.
    public static func defaultThreadCount() -> Int {
        if let raw = getenv("PERMAFROST_THREADS"), let value = Int(String(cString: raw)), value > 0 {
            return value
        }
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Set up by the first use of the thread count: checks that OpenBLAS loaded kernels that fit the
    /// CPU (``BLASCoreSelection``), makes it single-threaded (the engine splits products across its
    /// own pool, see `BLAS.sgemm`) and stops the server threads it started at load
    /// (``OpenBLASServerThreads``). Once only, whatever later `threadCount` changes: OpenBLAS 0.3.21's
    /// `openblas_set_num_threads` restarts a stopped server (its after-`fork` re-initialisation), so
    /// calling it again would bring the spinning threads back.
    private static let blasConfigured: Bool = {
        #if canImport(CBLAS)
        _ = BLASCoreSelection.outcome
        openblas_set_num_threads(1)
        _ = OpenBLASServerThreads.stopped
        #endif
        return true
    }()

    /// Runs `body(0..<parts)` in parallel, one call per part.
    public static func run(_ parts: Int, _ body: (Int) -> Void) {
        WorkerPool.shared.run(parts, threads: threadCount, body)
    }

    /// Splits `0..<count` into contiguous chunks of at least `minimumChunk` items and runs `body` on
    /// each, in parallel when there is enough work to pay for the fork-join (≈ 0.5 µs).
    @inline(__always)
    public static func forEachChunk(
        count: Int, minimumChunk: Int = 32_768, _ body: (Range<Int>) -> Void
    ) {
        guard count > 0 else { return }
        let threads = threadCount
        let chunks = min(threads, max(1, count / max(1, minimumChunk)))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        let size = (count + chunks - 1) / chunks
        WorkerPool.shared.run(chunks, threads: threads) { chunk in
            let start = chunk * size
            let end = min(count, start + size)
            if start < end { body(start..<end) }
        }
    }
}

/// Wraps a raw pointer so it can cross into `concurrentPerform`'s `@Sendable` closure; each
/// chunk writes a disjoint range.
@usableFromInline
struct SendablePointer<T>: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutablePointer<T>
    @usableFromInline init(_ base: UnsafeMutablePointer<T>) { self.base = base }
}

/// Carries a non-Sendable value into a fork-join whose tasks end before the call returns.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
