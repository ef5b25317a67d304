import XCTest
@testable import PermafrostTensor

/// The page-mapped cache behind large tensors: blocks come back to requests of the same size, and
/// live + cached bytes never pass the live high-water mark (so resident memory follows the
/// engine's peak accounting instead of growing with every shape a run has seen).
final class LargeBlockCacheTests: XCTestCase {
    func testBlocksAreReusedAndTheCacheStaysUnderTheLivePeak() throws {
        LargeBlockCache.trim()
        let mib = 1 << 20
        let start = LargeBlockCache.statistics
        XCTAssertEqual(start.cachedBytes, 0)

        let first = try XCTUnwrap(LargeBlockCache.allocate(bytes: mib))
        XCTAssertEqual(first.bytes, mib)
        first.pointer.storeBytes(of: 42, as: Int.self)  // the mapping is writable
        LargeBlockCache.release(first.pointer, bytes: first.bytes)
        XCTAssertEqual(LargeBlockCache.statistics.cachedBytes, mib)

        let again = try XCTUnwrap(LargeBlockCache.allocate(bytes: mib - 100))
        XCTAssertEqual(again.pointer, first.pointer, "a same-size request reuses the cached block")
        XCTAssertEqual(LargeBlockCache.statistics.hits, start.hits + 1)
        LargeBlockCache.release(again.pointer, bytes: again.bytes)

        // 3 MiB with 1 MiB cached would hold 4 MiB while the live peak was 1 MiB: the cached block goes.
        let larger = try XCTUnwrap(LargeBlockCache.allocate(bytes: 3 * mib))
        XCTAssertEqual(LargeBlockCache.statistics.cachedBytes, 0, "the cache never holds more than the live peak")
        #if os(Linux)
        // It is resized into the request rather than unmapped: its resident pages (and bytes) carry over.
        XCTAssertEqual(larger.pointer.load(as: Int.self), 42)
        #endif
        LargeBlockCache.release(larger.pointer, bytes: larger.bytes)

        // A 2 MiB request fits the cached 3 MiB block (within 2×); a 1 MiB one does not.
        let fitted = try XCTUnwrap(LargeBlockCache.allocate(bytes: 2 * mib))
        XCTAssertEqual(fitted.pointer, larger.pointer)
        XCTAssertEqual(fitted.bytes, 3 * mib)
        let small = try XCTUnwrap(LargeBlockCache.allocate(bytes: mib))
        XCTAssertNotEqual(small.pointer, larger.pointer)
        LargeBlockCache.release(fitted.pointer, bytes: fitted.bytes)
        LargeBlockCache.release(small.pointer, bytes: small.bytes)
        LargeBlockCache.trim()
        XCTAssertEqual(LargeBlockCache.statistics.cachedBytes, 0)
    }

    /// Tensors over the threshold live in cached blocks and still read back what was written.
    func testLargeTensorsRoundTripThroughRecycledBlocks() {
        let count = LargeBlockCache.thresholdBytes / 4 + 17
        for round in 0..<3 {
            let values = (0..<count).map { Float($0 % 1000) + Float(round) }
            let tensor = Tensor(shape: [count], scalars: values)
            XCTAssertEqual(tensor.scalars, values)
            let zeros = Tensor.zeros([count])
            XCTAssertTrue(zeros.scalars.allSatisfy { $0 == 0 }, "zeros are zero even in a reused block")
        }
    }
}
