#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The engine's fork-join pool: persistent worker threads that spin briefly after each job and then
/// sleep on a condition variable.
///
/// libdispatch's `concurrentPerform` was measured to run both halves of a job on the calling thread
/// about one time in five on these 2-core machines (its worker arrives late), halving GEMM speed;
/// OpenBLAS's own threads spin ~0.1 s after each call and starve everything else. One pool that every
/// kernel (GEMM blocks included) shares avoids both.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    private typealias Job = (Int) -> Void

    private let generation = Atomic<Int>(0)
    /// The current job's part count (high 32 bits) and next unclaimed part (low 32 bits), in one
    /// word: a claim then always learns whether the part it took exists in the job it took it from.
    /// With a separate counter, a worker that read the job pointer and was preempted could claim a
    /// part of the *next* job and call the previous job's freed closure (seen as a crash at a bad
    /// instruction address once convolutions ran a short fork-join per call).
    private let ticket = Atomic<UInt64>(0)
    private let unfinished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// Serialises submissions; a caller that finds the pool busy (another thread's job, or a nested
    /// call from inside a job) runs its parts itself.
    private let submitting = Atomic<Bool>(false)
    private var job: UnsafeMutablePointer<Job>?
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private let workerCount = Mutex(0)

    /// Spin iterations a worker waits for the next job before it sleeps (≈ 50–100 µs).
    private let spinLimit = 20_000

    private init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    /// Makes sure at least `count` workers exist.
    private func ensureWorkers(_ count: Int) {
        workerCount.withLock { existing in
            while existing < count {
                let context = Unmanaged.passRetained(self).toOpaque()
                var thread = pthread_t()
                let created = pthread_create(&thread, nil, { raw in
                    let pool = Unmanaged<WorkerPool>.fromOpaque(raw!).takeRetainedValue()
                    pool.workerLoop()
                    return nil
                }, context)
                guard created == 0 else { break }
                pthread_detach(thread)
                existing += 1
            }
        }
    }

    private func workerLoop() {
        var seen = generation.load(ordering: .acquiring)
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen && spins < spinLimit { spins += 1 }
            if generation.load(ordering: .acquiring) == seen {
                pthread_mutex_lock(&mutex)
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen {
                    pthread_cond_wait(&condition, &mutex)
                }
                sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(&mutex)
            }
            seen = generation.load(ordering: .acquiring)
            drain()
        }
    }

    /// Runs parts until none are left.
    private func drain() {
        while true {
            let claimed = ticket.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue
            let part = Int(claimed & 0xFFFF_FFFF), total = Int(claimed >> 32)
            // A valid claim keeps its job alive (the submitter waits for every part), so `job` is
            // that job's closure, published before its ticket.
            guard part < total, let job else { return }
            job.pointee(part)
            unfinished.wrappingSubtract(1, ordering: .releasing)
        }
    }

    /// Calls `body(i)` for every `i` in `0..<count`, using `threads` threads (the caller included).
    func run(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        guard count > 1, threads > 1, count < 1 << 31,
              submitting.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<count { body(i) }
            return
        }
        ensureWorkers(threads - 1)
        withoutActuallyEscaping(body) { body in
            let slot = UnsafeMutablePointer<Job>.allocate(capacity: 1)
            slot.initialize(to: body)
            job = slot
            unfinished.store(count, ordering: .relaxed)
            ticket.store(UInt64(count) << 32, ordering: .releasing)
            pthread_mutex_lock(&mutex)
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 { pthread_cond_broadcast(&condition) }
            pthread_mutex_unlock(&mutex)
            drain()
            while unfinished.load(ordering: .acquiring) > 0 {}
            job = nil
            slot.deinitialize(count: 1)
            slot.deallocate()
        }
        submitting.store(false, ordering: .releasing)
    }
}
