import XCTest
@testable import PermafrostTensor

/// Central finite-difference check of the engine's gradients.
///
/// The scalar under test is `L(x) = Σ f(x)·r` with a fixed random `r`, summed in Double so the only
/// Float32 error left is `f`'s own. Each input element (or a random sample of 48 of them) is moved by
/// ±h and the slope compared with the analytic gradient from `valueAndGradient`.
func assertGradientsMatchFiniteDifferences(
    _ inputs: [Tensor], step: Float = 3e-3, relativeTolerance: Float = 1e-2, absoluteTolerance: Float = 2e-3,
    file: StaticString = #filePath, line: UInt = #line, _ f: ([Tensor]) -> Tensor
) {
    let output = GradientRecording.withoutRecording { f(inputs) }
    var generator = PhiloxGenerator(seed: 99)
    let projection = Tensor(randomNormal: output.shape, generator: &generator)
    func objective(_ values: [Tensor]) -> Double {
        let y = GradientRecording.withoutRecording { f(values) }
        XCTAssertEqual(y.shape, output.shape, "output shape changed between calls", file: file, line: line)
        return zip(y.scalars, projection.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }
    let (_, analytic) = valueAndGradient(at: inputs.map { $0.requiringGradient() }) { p in (f(p) * projection).sum() }
    for (index, input) in inputs.enumerated() {
        guard let gradient = analytic[index] else {
            XCTFail("no gradient for input \(index)", file: file, line: line)
            continue
        }
        XCTAssertEqual(gradient.shape, input.shape, "gradient \(index) has the wrong shape", file: file, line: line)
        var positions = Array(0..<input.count)
        if positions.count > 48 {
            var chosen = Set<Int>()
            while chosen.count < 48 { chosen.insert(Int(generator.nextUInt32()) % input.count) }
            positions = chosen.sorted()
        }
        var failures = 0
        for position in positions {
            let x = input.scalars[position]
            let h = step * Swift.max(1, Swift.abs(x))
            var plus = inputs, minus = inputs
            plus[index].withUnsafeMutableBufferPointer { $0[position] = x + h }
            minus[index].withUnsafeMutableBufferPointer { $0[position] = x - h }
            let actualStep = Double((x + h) - (x - h))
            let numeric = Float((objective(plus) - objective(minus)) / actualStep)
            let exact = gradient.scalars[position]
            if Swift.abs(numeric - exact) > relativeTolerance * Swift.max(Swift.abs(numeric), Swift.abs(exact)) + absoluteTolerance {
                failures += 1
                if failures <= 3 {
                    XCTFail("input \(index) \(input.shape) element \(position): analytic \(exact) vs numeric \(numeric)", file: file, line: line)
                }
            }
        }
    }
}

/// Normal samples pushed at least `margin` away from the points in `kinks`, so ±h never crosses a
/// point where the function is not differentiable.
func smoothInput(_ shape: [Int], seed: UInt64, scale: Float = 1, avoiding kinks: [Float] = [], margin: Float = 0.05) -> Tensor {
    var generator = PhiloxGenerator(seed: seed)
    let raw = Tensor(randomNormal: shape, standardDeviation: scale, generator: &generator)
    return Tensor(shape: shape, scalars: raw.scalars.map { value in
        var v = value
        for kink in kinks where Swift.abs(v - kink) < margin { v = kink + (v >= kink ? margin : -margin) }
        return v
    })
}

func positiveInput(_ shape: [Int], seed: UInt64, lower: Float = 0.5, upper: Float = 2) -> Tensor {
    var generator = PhiloxGenerator(seed: seed)
    return Tensor(randomUniform: shape, lower: lower, upper: upper, generator: &generator)
}

/// Element-wise relative error ≤ `tolerance`, each element's error taken relative to its own magnitude
/// floored at a tenth of the tensor's largest: Float32 sums that cancel to a value far below the
/// tensor's scale carry an absolute rounding error of that scale, not of the tiny result.
func assertClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-5, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "shape \(message)", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let scale = Swift.max(expected.scalars.map { Swift.abs($0) }.max() ?? 0, 1e-30)
    var worst: Float = 0, worstIndex = 0
    for (i, (a, e)) in zip(actual.scalars, expected.scalars).enumerated() {
        let error = Swift.abs(a - e) / Swift.max(Swift.abs(e), scale * 0.1)
        if !(error <= worst) { worst = error; worstIndex = i }
    }
    XCTAssert(worst <= tolerance, "\(message): relative error \(worst) at element \(worstIndex) (got \(actual.scalars[worstIndex]), expected \(expected.scalars[worstIndex]))", file: file, line: line)
}
