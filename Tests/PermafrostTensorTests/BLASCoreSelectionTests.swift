import XCTest
@testable import PermafrostTensor

final class BLASCoreSelectionTests: XCTestCase {
    func testPreferredCoreFollowsTheCPUsFeatures() {
        XCTAssertEqual(BLASCoreSelection.preferredCore(cpuFlags: ["sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]), "SkylakeX")
        // AVX-512 without BW/DQ/VL (Knights Landing) is not what the SkylakeX kernels need.
        XCTAssertEqual(BLASCoreSelection.preferredCore(cpuFlags: ["avx", "avx2", "fma", "avx512f"]), "Haswell")
        XCTAssertNil(BLASCoreSelection.preferredCore(cpuFlags: ["sse3", "avx"]))
        XCTAssertNil(BLASCoreSelection.preferredCore(cpuFlags: ["avx2"]))
    }

    /// On a CPU with AVX2 and FMA the kernels in use are never the pre-AVX fallback OpenBLAS picks
    /// for CPUs it does not recognise — and a matrix product still gives the right answer after any
    /// re-selection.
    func testActiveKernelsFitTheCPU() throws {
        _ = Parallel.threadCount
        guard let outcome = BLASCoreSelection.outcome else { throw XCTSkip("BLAS is not a dynamic-dispatch OpenBLAS") }
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("flags") }.map { Set($0.split(separator: " ").map(String.init)) } ?? []
        if getenv("OPENBLAS_CORETYPE") == nil, BLASCoreSelection.preferredCore(cpuFlags: flags) != nil {
            XCTAssertFalse(BLASCoreSelection.preAVXCores.contains(outcome.active.lowercased()),
                           "OpenBLAS runs \(outcome.active) kernels on a CPU with AVX2 (detected: \(outcome.detected))")
        }
        var generator = PhiloxGenerator(seed: 3)
        let a = Tensor(randomNormal: [67, 45], generator: &generator), b = Tensor(randomNormal: [45, 38], generator: &generator)
        XCTAssertLessThan(largestProductError(a, b), 1e-4)
    }
}
