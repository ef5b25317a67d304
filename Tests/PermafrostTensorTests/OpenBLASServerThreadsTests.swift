import XCTest
@testable import PermafrostTensor
#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS's own thread pool is stopped once the engine has configured BLAS, and matrix products
/// from the engine's pool neither need it nor restart it.
final class OpenBLASServerThreadsTests: XCTestCase {
    func testServerThreadsAreStoppedAndStayStopped() throws {
        #if os(Linux)
        guard let program = dlopen(nil, RTLD_NOW), let flag = dlsym(program, "blas_server_avail"),
              dlsym(program, "blas_thread_shutdown_") != nil else {
            throw XCTSkip("BLAS is not a pthreads OpenBLAS")
        }
        let previous = Parallel.threadCount
        defer { Parallel.threadCount = previous }
        Parallel.threadCount = 2
        // Read before `OpenBLASServerThreads.stopped`, whose first read would stop them itself:
        // configuring the engine's threads must be enough.
        let serverRunning = flag.assumingMemoryBound(to: Int32.self)
        XCTAssertEqual(serverRunning.pointee, 0, "OpenBLAS's server threads are still running")
        XCTAssertTrue(OpenBLASServerThreads.stopped)

        // A product large enough for the engine to split across its pool, checked against a
        // double-precision sum: BLAS still works without its server, and does not start it again.
        var generator = PhiloxGenerator(seed: 11)
        let a = Tensor(randomNormal: [192, 160], generator: &generator), b = Tensor(randomNormal: [160, 144], generator: &generator)
        XCTAssertLessThan(largestProductError(a, b, rowStride: 7), 1e-3)
        XCTAssertEqual(serverRunning.pointee, 0, "a matrix product restarted OpenBLAS's server threads")
        #else
        throw XCTSkip("OpenBLAS's server threads exist only on Linux")
        #endif
    }
}
