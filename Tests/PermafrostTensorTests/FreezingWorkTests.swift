import XCTest
@testable import PermafrostTensor

/// Proves, by kernel counters, that backward does no work for frozen tensors.
final class FreezingWorkTests: XCTestCase {
    let batch = 8, sizes = [12, 10, 7, 3]

    /// A 3-layer MLP `x → relu(xW1ᵀ+b1) → relu(·W2ᵀ+b2) → ·W3ᵀ+b3 → cross-entropy`.
    func mlpLoss(_ p: [Tensor], input: Tensor) -> Tensor {
        var h = input
        for layer in 0..<3 {
            h = h.matmul(p[2 * layer], transposeOther: true) + p[2 * layer + 1]
            if layer < 2 { h = h.relu() }
        }
        return crossEntropy(logits: h, labels: (0..<batch).map { $0 % 3 })
    }

    func parameters(trainable: (Int) -> Bool) -> [Tensor] {
        var generator = PhiloxGenerator(seed: 1)
        var result: [Tensor] = []
        for layer in 0..<3 {
            let w = Tensor(randomNormal: [sizes[layer + 1], sizes[layer]], standardDeviation: 0.3, generator: &generator)
            let b = Tensor(randomNormal: [sizes[layer + 1]], standardDeviation: 0.1, generator: &generator)
            result += [trainable(2 * layer) ? w.requiringGradient() : w, trainable(2 * layer + 1) ? b.requiringGradient() : b]
        }
        return result
    }

    func input() -> Tensor {
        var generator = PhiloxGenerator(seed: 2)
        return Tensor(randomNormal: [batch, sizes[0]], generator: &generator)
    }

    func testFirstTwoLayersFrozenRunOnlyTheLastWeightGradient() {
        // W1, b1, W2, b2 frozen; W3, b3 trainable.
        let params = parameters { $0 >= 4 }
        let x = input()
        let (result, statistics) = KernelCounters.measure { valueAndGradient(at: params) { mlpLoss($0, input: x) } }
        let forward = statistics.gemms(.forward).map { [$0.m, $0.n, $0.k] }
        XCTAssertEqual(forward, [[8, 10, 12], [8, 7, 10], [8, 3, 7]])
        XCTAssertEqual(statistics.gemms(.weightGradient).map { [$0.m, $0.n, $0.k] }, [[3, 7, 8]], "only dW3 may run")
        XCTAssertEqual(statistics.gemms(.inputGradient).count, 0, "no dX: nothing upstream of layer 3 trains")
        XCTAssertEqual(statistics.calls[.gemm], 4)
        XCTAssertNil(result.gradients[0]); XCTAssertNil(result.gradients[2])
        XCTAssertNotNil(result.gradients[4]); XCTAssertNotNil(result.gradients[5])
    }

    func testFrozenWeightsWithTrainableBiasesSkipOnlyTheWeightGradients() {
        // W1, W2 frozen; every bias and W3 trainable: dX must reach layer 2's input, but never the input x.
        let params = parameters { $0 != 0 && $0 != 2 }
        let x = input()
        let (_, statistics) = KernelCounters.measure { valueAndGradient(at: params) { mlpLoss($0, input: x) } }
        XCTAssertEqual(statistics.gemms(.weightGradient).map { [$0.m, $0.n, $0.k] }, [[3, 7, 8]], "dW1 and dW2 must not run")
        XCTAssertEqual(statistics.gemms(.inputGradient).map { [$0.m, $0.n, $0.k] }, [[8, 7, 3], [8, 10, 7]],
                       "dX into layers 3 and 2 only; none into layer 1")
        let gemmFLOPs = statistics.flops[.gemm] ?? 0
        XCTAssertEqual(gemmFLOPs, 2 * 8 * (10 * 12 + 7 * 10 + 3 * 7) + 2 * 3 * 7 * 8 + 2 * 8 * (7 * 3 + 10 * 7))
    }

    func testAllTrainableRunsEveryGradient() {
        let params = parameters { _ in true }
        let x = input()
        let (_, statistics) = KernelCounters.measure { valueAndGradient(at: params) { mlpLoss($0, input: x) } }
        XCTAssertEqual(statistics.gemms(.weightGradient).count, 3)
        XCTAssertEqual(statistics.gemms(.inputGradient).count, 2, "the data input needs no gradient")
    }

    func testEverythingFrozenRunsNoBackward() {
        let params = parameters { _ in false }
        let x = input()
        let (result, statistics) = KernelCounters.measure { valueAndGradient(at: params) { mlpLoss($0, input: x) } }
        XCTAssertEqual(statistics.calls[.gemm], 3)
        XCTAssert(result.gradients.allSatisfy { $0 == nil })
    }

    func testFrozenConvolutionFilterSkipsIm2colInBackward() {
        var generator = PhiloxGenerator(seed: 4)
        let x = Tensor(randomNormal: [2, 3, 8, 8], generator: &generator)
        let frozenFilter = Tensor(randomNormal: [4, 3, 3, 3], generator: &generator)
        let bias = Tensor.zeros([4]).requiringGradient()
        func measured() -> KernelStatistics {
            KernelCounters.measure {
                valueAndGradient(at: [frozenFilter, bias]) { p in x.conv2d(filter: p[0], bias: p[1], padding: (1, 1)).sum() }
            }.1
        }
        let native = ConvolutionKernels.withNativeKernels { measured() }
        XCTAssertEqual(native.calls[.im2col], 1, "forward only: a frozen filter needs no columns in backward")
        XCTAssertEqual(native.calls[.col2im] ?? 0, 0)
        XCTAssertEqual(native.gemms.map(\.role), [.forward])
        // Through oneDNN (where it is in use), no backward convolution runs either.
        XCTAssertEqual(measured().gemms.map(\.role), [.forward], ConvolutionKernels.current)
    }
}

final class ActivationSavingTests: XCTestCase {
    /// A frozen weight needs no copy of its input for backward: the intermediate activation feeding
    /// it is released as soon as the forward pass no longer uses it.
    func testFrozenLayersKeepNoInputActivation() {
        var g = PhiloxGenerator(seed: 1)
        let x = Tensor(randomNormal: [256, 512], generator: &g).requiringGradient()
        let weight = Tensor(randomNormal: [512, 512], generator: &g)
        func graphBytes(weightTrainable: Bool) -> Int {
            let w = weightTrainable ? weight.requiringGradient() : weight
            let before = MemoryStatistics.liveBytes
            let y = (x * 2).matmul(w, transposeOther: true) // the [256, 512] product x·2 is an intermediate
            let held = MemoryStatistics.liveBytes - before - y.count * 4
            withExtendedLifetime(y) {}
            return held
        }
        let intermediate = 256 * 512 * 4
        XCTAssertGreaterThanOrEqual(graphBytes(weightTrainable: true), intermediate, "a trainable weight keeps its input")
        XCTAssertLessThan(graphBytes(weightTrainable: false), intermediate, "a frozen weight keeps no input activation")
    }
}
