import Foundation
import XCTest
import PermafrostIO
import PermafrostNN
import PermafrostTensor

func fixtureURL(_ name: String) -> URL {
    Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures")!
}

func temporaryDirectory() -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-tests-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Element-wise |a − e| ≤ tolerance · max(|e|, 0.1·max|E|) (see the tensor tests for why the floor).
func assertClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-5, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, message, file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let scale = expected.scalars.map { abs($0) }.max() ?? 0
    for (i, (a, e)) in zip(actual.scalars, expected.scalars).enumerated() {
        let error = abs(a - e) / max(abs(e), 0.1 * scale, 1e-30)
        if !(error <= tolerance) {
            XCTFail("\(message): element \(i) is \(a), expected \(e) (relative error \(error))", file: file, line: line)
            return
        }
    }
}

/// The fixtures' MLP: Linear(12,16) ReLU Linear(16,8) GELU Linear(8,4).
func fixtureMLP() -> Sequential {
    var g = PhiloxGenerator(seed: 1)
    return Sequential([Linear(12, 16, generator: &g), ReLU(), Linear(16, 8, generator: &g), GELU(), Linear(8, 4, generator: &g)])
}

/// The fixtures' CNN.
func fixtureCNN() -> Sequential {
    var g = PhiloxGenerator(seed: 1)
    return Sequential([Conv2d(1, 4, kernelSize: 3, padding: 1, generator: &g), GroupNorm(groups: 2, channels: 4), SiLU(),
                       Conv2d(4, 8, kernelSize: 3, stride: 2, padding: 1, generator: &g), ReLU(), AvgPool2d(kernel: 2),
                       Flatten(), Linear(32, 5, generator: &g)])
}
