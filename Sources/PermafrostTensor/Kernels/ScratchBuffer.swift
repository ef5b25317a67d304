#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A temporary Float buffer (uninitialised) recycled through a small pool.
///
/// Convolution's column matrices are tens of MB: allocated fresh each call they are mmapped and
/// page-faulted every time (measured ≈ 3% of a UNet step in the kernel's page-clearing alone).
/// Returned buffers are kept (a few, up to 256 MiB in all) and handed out again.
final class ScratchBuffer {
    let base: UnsafeMutablePointer<Float>
    let capacity: Int

    private struct Block: @unchecked Sendable {
        let base: UnsafeMutablePointer<Float>
        let capacity: Int
    }
    private static let pool = Mutex<[Block]>([])
    private static let poolLimitBytes = 256 << 20

    init(count: Int) {
        let needed = Swift.max(count, 1)
        let reused: Block? = Self.pool.withLock { pool in
            // The smallest pooled buffer that is large enough.
            guard let index = pool.indices.filter({ pool[$0].capacity >= needed }).min(by: { pool[$0].capacity < pool[$1].capacity }) else { return nil }
            return pool.remove(at: index)
        }
        if let reused {
            base = reused.base
            capacity = reused.capacity
        } else {
            base = UnsafeMutablePointer<Float>.allocate(capacity: needed)
            capacity = needed
        }
    }

    deinit {
        let block = Block(base: base, capacity: capacity)
        let keep: Bool = Self.pool.withLock { pool in
            let held = pool.reduce(0) { $0 + $1.capacity * 4 }
            guard held + block.capacity * 4 <= Self.poolLimitBytes, pool.count < 8 else { return false }
            pool.append(block)
            return true
        }
        if !keep { base.deallocate() }
    }
}
