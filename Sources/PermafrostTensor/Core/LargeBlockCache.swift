#if canImport(Glibc)
import Glibc
#if canImport(CMemory)
import CMemory
#endif
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Page-mapped buffers for large tensors, recycled by size and bounded by the live peak.
///
/// Why not `malloc`: glibc keeps freed blocks in per-thread arenas, so a training process's
/// resident memory grew to roughly twice its live tensor bytes (the UNet fine-tune: 540 MB resident
/// for a 294 MB tensor peak), and the memory a frozen tensor saves never showed up in the
/// process's footprint. Mapping every large buffer afresh fixes that but page-faults each one
/// (measured 40–60% slower UNet steps). Here freed blocks are kept and handed out again to the
/// smallest request they fit within 2× (training steps repeat their shapes, so nearly every request hits),
/// and the cache never lets live + cached bytes pass the most large-block bytes ever live at once:
/// a miss that would cross it unmaps cached blocks first, oldest first. The process's resident
/// memory then follows the engine's own peak accounting. On Linux the oldest cached block, rather
/// than being unmapped to make room, is resized (`mremap`) into the request: its resident pages are
/// kept, so only the difference page-faults (a shrink faults nothing and releases the tail). With
/// mixed tensor sizes (a transformer's `[tokens, hidden]` and `[tokens, 4·hidden]`) unmapping and
/// mapping afresh had cost ≈ 7% of a step in page faults.
enum LargeBlockCache {
    /// Requests of at least this many bytes are page-mapped; smaller ones use `malloc`.
    static let thresholdBytes = 256 << 10

    private struct Block: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
        let bytes: Int
    }

    private struct State {
        /// Free blocks, oldest first.
        var free: [Block] = []
        var cachedBytes = 0
        var liveBytes = 0
        /// The most bytes (live + cached) the cache may hold: the live high-water mark.
        var ceiling = 0
        var hits = 0
        var misses = 0
    }

    private static let state = Mutex(State())
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// `bytes` rounded up to whole pages.
    static func roundedSize(_ bytes: Int) -> Int { (bytes + pageSize - 1) / pageSize * pageSize }

    /// A page-aligned block of at least `bytes` (≥ ``thresholdBytes``) and its actual size (pass
    /// that to ``release(_:bytes:)``), or `nil` when the system has no memory left.
    static func allocate(bytes: Int) -> (pointer: UnsafeMutableRawPointer, bytes: Int)? {
        let size = roundedSize(bytes)
        let (plan, evicted) = state.withLock { s -> (Plan, [Block]) in
            // Best fit among blocks up to twice the size: a larger block's pages are resident
            // already, so serving a smaller request from it costs no memory, while a miss
            // page-faults a fresh mapping.
            var best: Int?
            for index in s.free.indices where s.free[index].bytes >= size && s.free[index].bytes <= 2 * size {
                if best == nil || s.free[index].bytes < s.free[best!].bytes { best = index }
            }
            if let best {
                let block = s.free.remove(at: best)
                s.cachedBytes -= block.bytes
                s.liveBytes += block.bytes
                s.hits += 1
                return (.reuse(block), [])
            }
            s.misses += 1
            // Over the ceiling the oldest cached block would be unmapped to make room: resize it
            // into this request instead, so its resident pages serve again.
            var plan = Plan.map
            if canResize, s.liveBytes + s.cachedBytes + size > s.ceiling, !s.free.isEmpty {
                let block = s.free.removeFirst()
                s.cachedBytes -= block.bytes
                plan = .resize(block)
            }
            // Make room: live + cached + this block stays under the high-water mark while blocks
            // can be dropped; past that, this block raises it.
            var dropped = 0
            while s.liveBytes + s.cachedBytes + size > s.ceiling, dropped < s.free.count {
                s.cachedBytes -= s.free[dropped].bytes
                dropped += 1
            }
            let evicted = Array(s.free.prefix(dropped))
            s.free.removeFirst(dropped)
            s.liveBytes += size
            s.ceiling = Swift.max(s.ceiling, s.liveBytes + s.cachedBytes)
            return (plan, evicted)
        }
        for block in evicted { munmap(block.pointer, block.bytes) }
        switch plan {
        case .reuse(let block):
            return (block.pointer, block.bytes)
        case .resize(let block):
            if let moved = resized(block, to: size) { return (moved, size) }
            munmap(block.pointer, block.bytes)
        case .map:
            break
        }
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != MAP_FAILED else {
            state.withLock { $0.liveBytes -= size }
            return nil
        }
        return (mapped, size)
    }

    private enum Plan {
        case reuse(Block), resize(Block), map
    }

    #if canImport(CMemory)
    private static let canResize = true
    /// `block` resized to `size` bytes with its resident pages kept (nil if the kernel refuses).
    private static func resized(_ block: Block, to size: Int) -> UnsafeMutableRawPointer? {
        guard let moved = permafrost_resize_mapping(block.pointer, block.bytes, size), moved != MAP_FAILED else { return nil }
        return moved
    }
    #else
    private static let canResize = false
    private static func resized(_ block: Block, to size: Int) -> UnsafeMutableRawPointer? { nil }
    #endif

    /// Returns a block from ``allocate(bytes:)`` (with the size it reported) to the cache.
    static func release(_ pointer: UnsafeMutableRawPointer, bytes size: Int) {
        state.withLock { s in
            s.liveBytes -= size
            s.free.append(Block(pointer: pointer, bytes: size))
            s.cachedBytes += size
        }
    }

    /// Live and cached bytes, and how many requests were served from the cache.
    static var statistics: (liveBytes: Int, cachedBytes: Int, hits: Int, misses: Int) {
        state.withLock { ($0.liveBytes, $0.cachedBytes, $0.hits, $0.misses) }
    }

    /// Unmaps every cached block (the live ones stay), and lowers the ceiling to what is live.
    static func trim() {
        let blocks: [Block] = state.withLock { s in
            let blocks = s.free
            s.free.removeAll()
            s.cachedBytes = 0
            s.ceiling = s.liveBytes
            return blocks
        }
        for block in blocks { munmap(block.pointer, block.bytes) }
    }
}

