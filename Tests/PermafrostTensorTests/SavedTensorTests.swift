import XCTest
@testable import PermafrostTensor

/// What the autodiff graph keeps alive, and for how long: the memory side of every training step.
final class SavedTensorTests: XCTestCase {
    /// Backward frees each operation's saved tensors once it has run (so a step's peak does not
    /// carry the whole graph to the end of backward); `retainGraph` keeps them for a second pass,
    /// which then gives the same gradients.
    func testBackwardFreesSavedTensorsUnlessTheGraphIsRetained() throws {
        var g = PhiloxGenerator(seed: 3)
        let count = 50_000
        let x = Tensor(randomNormal: [count], generator: &g)
        let w = Tensor(randomNormal: [count], generator: &g).requiringGradient()
        func forward() -> Tensor { ((x * w).silu() * w).tanh().sum() }

        let start = MemoryStatistics.liveBytes
        let loss = forward()
        let kept = MemoryStatistics.liveBytes - start
        // x (for w's gradient), silu's input, silu's output (for w's gradient) and tanh's output.
        XCTAssertGreaterThanOrEqual(kept, 3 * count * 4)
        let gradient = try XCTUnwrap(loss.gradients(withRespectTo: [w])[0])
        let afterBackward = MemoryStatistics.liveBytes - start
        // The loss is still alive, but the graph behind it holds nothing any more: only the gradient.
        XCTAssertEqual(afterBackward, count * 4, accuracy: 64, "saved tensors freed by backward")

        let retained = forward()
        let first = try XCTUnwrap(retained.gradients(withRespectTo: [w], retainGraph: true)[0])
        XCTAssertGreaterThanOrEqual(MemoryStatistics.liveBytes - start, kept + 2 * count * 4, "a retained graph keeps its tensors")
        let second = try XCTUnwrap(retained.gradients(withRespectTo: [w])[0])
        XCTAssertEqual(first.scalars, second.scalars)
        XCTAssertEqual(first.scalars, gradient.scalars)
    }

    /// A product keeps each operand only for the other's gradient: scaling by a constant (or by a
    /// frozen tensor's product with a constant) keeps nothing of the scaled tensor.
    func testScalingByAConstantKeepsNoCopyOfTheScaledTensor() throws {
        var g = PhiloxGenerator(seed: 4)
        let count = 40_000
        let w = Tensor(randomNormal: [count], generator: &g).requiringGradient()
        let start = MemoryStatistics.liveBytes
        let scaled = (w + 1) * 0.5 / 3  // w + 1 is a temporary: nothing needs it for backward
        XCTAssertEqual(MemoryStatistics.liveBytes - start, count * 4, accuracy: 64, "only the result is alive")
        let gradient = try XCTUnwrap(scaled.sum().gradients(withRespectTo: [w])[0])
        for value in gradient.scalars { XCTAssertEqual(value, 0.5 / 3, accuracy: 1e-7) }

        // With two trainable operands both are kept, and both gradients are right.
        let v = Tensor(randomNormal: [count], generator: &g).requiringGradient()
        let product = (w + 1) * (v - 1)
        let both = product.sum().gradients(withRespectTo: [w, v])
        let (dw, dv) = (try XCTUnwrap(both[0]).scalars, try XCTUnwrap(both[1]).scalars)
        let (ws, vs) = (w.scalars, v.scalars)
        for i in stride(from: 0, to: count, by: 997) {
            XCTAssertEqual(dw[i], vs[i] - 1, accuracy: 1e-6)
            XCTAssertEqual(dv[i], ws[i] + 1, accuracy: 1e-6)
        }
        // Dividing by a trainable tensor keeps the quotient for the divisor's gradient.
        let quotient = (w * 1) / (v * v + 1)
        let dq = try XCTUnwrap(quotient.sum().gradients(withRespectTo: [v])[0]).scalars
        for i in stride(from: 0, to: count, by: 997) {
            let denominator = vs[i] * vs[i] + 1
            XCTAssertEqual(dq[i], -ws[i] * 2 * vs[i] / (denominator * denominator), accuracy: 1e-4 * max(1, abs(dq[i])))
        }
    }
}

extension SavedTensorTests {
    /// `formSiLU()` overwrites a buffer nothing else holds (under activation compression), gives
    /// exactly `silu()`'s values and gradients, and never touches a buffer another tensor shares.
    func testInPlaceSiLUMatchesSiLUAndLeavesSharedBuffersAlone() throws {
        var g = PhiloxGenerator(seed: 8)
        let count = 30_000
        let x = Tensor(randomNormal: [count], generator: &g).requiringGradient()
        let upstream = Tensor(randomNormal: [count], generator: &g)
        let (reference, inPlace) = try ActivationCompression.with(.int8) {
            (try activationRun(x, upstream) { $0 = $0.silu() }, try activationRun(x, upstream) { $0.formSiLU() })
        }
        XCTAssertEqual(inPlace.values, reference.values)
        XCTAssertEqual(inPlace.gradient, reference.gradient)
        XCTAssertEqual(inPlace.kept, count + count * 4, accuracy: 64, "the output reuses the input's buffer; only the 8-bit copy is new")

        // A shared buffer is never overwritten: the other holder keeps its values.
        try ActivationCompression.with(.int8) {
            let shared = x * 2
            var b = shared
            b.formSiLU()
            XCTAssertEqual(shared.scalars, (x * 2).scalars)
            XCTAssertEqual(b.scalars, shared.silu().scalars)
            _ = try XCTUnwrap(b.sum().gradients(withRespectTo: [x])[0])
        }
    }

    /// Where no gradient flows (a frozen prefix), `formSiLU()` works in place without compression too:
    /// same values as `silu()`, no new buffer, and a shared buffer is still left alone.
    func testInPlaceSiLUWithoutGradientAllocatesNothing() {
        var g = PhiloxGenerator(seed: 9)
        let x = Tensor(randomNormal: [30_000], generator: &g)
        let expected = (x * 2).silu().scalars
        var a = x * 2
        let start = MemoryStatistics.liveBytes
        a.formSiLU()
        XCTAssertEqual(MemoryStatistics.liveBytes - start, 0)
        XCTAssertEqual(a.scalars, expected)
        XCTAssertFalse(a.requiresGradient)
        let shared = x * 2
        var b = shared
        b.formSiLU()
        XCTAssertEqual(shared.scalars, (x * 2).scalars)
        XCTAssertEqual(b.scalars, expected)
    }
}

extension SavedTensorTests {
    /// `formReLU()` overwrites a buffer nothing else holds — with or without a gradient flowing —
    /// gives exactly `relu()`'s values and gradients (zeros, NaN and negative zero included), keeps
    /// only the bit mask, and leaves a shared buffer alone.
    func testInPlaceReLUMatchesReLUAndLeavesSharedBuffersAlone() throws {
        var g = PhiloxGenerator(seed: 10)
        let count = 30_001
        var raw = Tensor(randomNormal: [count], generator: &g)
        raw.withUnsafeMutableBufferPointer { $0[0] = 0; $0[1] = -0.0; $0[2] = .nan; $0[3] = .infinity }
        let x = raw.requiringGradient()
        let upstream = Tensor(randomNormal: [count], generator: &g)
        let reference = try activationRun(x, upstream) { $0 = $0.relu() }, inPlace = try activationRun(x, upstream) { $0.formReLU() }
        XCTAssertEqual(inPlace.values.map(\.bitPattern), reference.values.map(\.bitPattern))
        XCTAssertEqual(inPlace.gradient.map(\.bitPattern), reference.gradient.map(\.bitPattern))
        XCTAssertEqual(inPlace.kept, count * 4 + (count + 31) / 32 * 4, accuracy: 64, "the output reuses the input's buffer; only the bit mask is new")

        let shared = x * 2
        var b = shared
        b.formReLU()
        XCTAssertEqual(shared.scalars.map(\.bitPattern), (x * 2).scalars.map(\.bitPattern))
        XCTAssertEqual(b.scalars.map(\.bitPattern), shared.relu().scalars.map(\.bitPattern))

        // No gradient flowing: in place, nothing allocated, no autodiff node.
        var c = raw * 2
        let start = MemoryStatistics.liveBytes
        c.formReLU()
        XCTAssertEqual(MemoryStatistics.liveBytes - start, 0)
        XCTAssertFalse(c.requiresGradient)
        XCTAssertEqual(c.scalars.map(\.bitPattern), (raw * 2).relu().scalars.map(\.bitPattern))
    }
}

extension SavedTensorTests {
    /// ReLU's backward masks an incoming gradient nothing else holds in place (same buffer, same
    /// values as the fresh-buffer form) and copies one that is shared.
    func testReLUMaskOverwritesOnlyAnUnsharedGradient() {
        var g = PhiloxGenerator(seed: 11)
        let count = 1_000 * 32 + 7
        let x = Tensor(randomNormal: [count], generator: &g), upstream = Tensor(randomNormal: [count], generator: &g)
        let mask = SignMask(positiveIn: x)
        let expected = mask.masking(upstream).scalars.map(\.bitPattern)
        XCTAssertEqual(expected, zip(x.scalars, upstream.scalars).map { ($0 > 0 ? $1 : 0).bitPattern })

        var unshared = upstream * 1
        let buffer = unshared.storage.base
        let masked = mask.masking(consuming: &unshared)
        XCTAssertEqual(masked.storage.base, buffer, "an unshared gradient is masked in place")
        XCTAssertEqual(masked.scalars.map(\.bitPattern), expected)

        var shared = upstream
        let copy = mask.masking(consuming: &shared)
        XCTAssertNotEqual(copy.storage.base, upstream.storage.base, "a shared gradient is never overwritten")
        XCTAssertEqual(copy.scalars.map(\.bitPattern), expected)
        XCTAssertEqual(upstream.scalars.map(\.bitPattern), shared.scalars.map(\.bitPattern))
    }
}

/// Applies `activate` to `x * 2` (a fresh buffer) and returns the values, the gradient of
/// `Σ activate(2x)·upstream` with respect to `x`, and the bytes the activation added.
private func activationRun(_ x: Tensor, _ upstream: Tensor, _ activate: (inout Tensor) -> Void) throws -> (values: [Float], gradient: [Float], kept: Int) {
    let start = MemoryStatistics.liveBytes
    var a = x * 2
    activate(&a)
    let kept = MemoryStatistics.liveBytes - start
    let gradient = try XCTUnwrap((a * upstream).sum().gradients(withRespectTo: [x])[0])
    return (a.scalars, gradient.scalars, kept)
}
