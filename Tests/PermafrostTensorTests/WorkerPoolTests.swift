import Synchronization
import XCTest
@testable import PermafrostTensor

/// The fork-join pool under many short jobs of different sizes, where a worker that is slow to
/// arrive meets the next job already published.
final class WorkerPoolTests: XCTestCase {
    func testEveryPartOfEveryJobRunsExactlyOnce() {
        let pool = WorkerPool.shared
        let jobs = 200_000, slots = 4
        // One counter per (job, part), and one for parts a job does not have: a part run twice, or
        // run by a job that was handed another job's part number, shows up here.
        let counts = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: jobs * slots + 1)
        for i in 0...(jobs * slots) { (counts + i).initialize(to: Atomic(0)) }
        defer { counts.deallocate() }
        let address = Int(bitPattern: counts), outOfRange = jobs * slots
        for job in 0..<jobs {
            let parts = 2 + job % 3
            pool.run(parts, threads: 8) { part in
                let table = UnsafeMutablePointer<Atomic<Int>>(bitPattern: address)!
                _ = table[part < parts ? job * slots + part : outOfRange].wrappingAdd(1, ordering: .relaxed)
            }
        }
        XCTAssertEqual(counts[outOfRange].load(ordering: .relaxed), 0, "parts beyond their job's count were run")
        let wrong = (0..<jobs).flatMap { job in (0..<(2 + job % 3)).map { job * slots + $0 } }.filter { counts[$0].load(ordering: .relaxed) != 1 }
        XCTAssertEqual(wrong.count, 0, "parts not run exactly once, e.g. job \((wrong.first ?? 0) / slots) part \((wrong.first ?? 0) % slots)")
    }
}
