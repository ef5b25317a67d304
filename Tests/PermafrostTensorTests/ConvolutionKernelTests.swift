import XCTest
@testable import PermafrostTensor

/// oneDNN's convolutions (DNNLConvolution.swift) against the engine's own im2col/GEMM kernels,
/// which the finite-difference and PyTorch tests pin down: same outputs and gradients.
final class ConvolutionKernelTests: XCTestCase {
    struct Case {
        var input: [Int], outChannels: Int, kernel: (Int, Int)
        var stride = (1, 1), padding = (0, 0), dilation = (1, 1), bias = true
    }

    let cases: [Case] = [
        Case(input: [4, 8, 12, 12], outChannels: 16, kernel: (3, 3), padding: (1, 1)),
        Case(input: [3, 16, 14, 14], outChannels: 8, kernel: (3, 3), stride: (2, 2), padding: (1, 1)),
        Case(input: [5, 1, 28, 28], outChannels: 32, kernel: (3, 3), padding: (1, 1)),
        Case(input: [2, 12, 9, 7], outChannels: 5, kernel: (1, 1), bias: false),
        Case(input: [3, 6, 11, 13], outChannels: 10, kernel: (5, 3), stride: (2, 1), padding: (2, 0)),
        Case(input: [2, 7, 10, 10], outChannels: 4, kernel: (3, 3), padding: (2, 2), dilation: (2, 2)),
        Case(input: [1, 17, 7, 7], outChannels: 33, kernel: (3, 3), stride: (2, 2), padding: (0, 0)),
    ]

    /// Output and the gradients of input, filter and bias of `Σ conv(x)·r`.
    func run(_ c: Case, seed: UInt64, compressWeightInputs: Bool = false) -> [Tensor] {
        var g = PhiloxGenerator(seed: seed)
        let x = Tensor(randomNormal: c.input, generator: &g).requiringGradient()
        let w = (Tensor(randomNormal: [c.outChannels, c.input[1], c.kernel.0, c.kernel.1], generator: &g) * 0.2).requiringGradient()
        let b = Tensor(randomNormal: [c.outChannels], generator: &g).requiringGradient()
        return ActivationCompression.with(compressWeightInputs ? .int8WithWeightInputs : .none) {
            let y = x.conv2d(filter: w, bias: c.bias ? b : nil, stride: c.stride, padding: c.padding, dilation: c.dilation)
            var r = PhiloxGenerator(seed: seed + 1)
            let loss = (y * Tensor(randomNormal: y.shape, generator: &r)).sum()
            let grads = loss.gradients(withRespectTo: c.bias ? [x, w, b] : [x, w])
            return [y.detached()] + grads.map { $0! }
        }
    }

    func testOneDNNMatchesTheNativeKernels() throws {
        #if os(Linux)
        if getenv("PERMAFROST_CONVOLUTION") == nil { XCTAssertEqual(ConvolutionKernels.current, "oneDNN", "Linux builds convolve with oneDNN") }
        #endif
        for (index, c) in cases.enumerated() {
            for compress in [false, true] {
                let native = ConvolutionKernels.withNativeKernels { run(c, seed: UInt64(index), compressWeightInputs: compress) }
                let current = run(c, seed: UInt64(index), compressWeightInputs: compress)
                for (name, (a, e)) in zip(["output", "input gradient", "filter gradient", "bias gradient"], zip(current, native)) {
                    assertClose(a, e, tolerance: 5e-5, "case \(index) (\(c.input), \(ConvolutionKernels.current)), 8-bit inputs \(compress): \(name)")
                }
            }
        }
    }

    func testOneDNNGradientsMatchFiniteDifferences() {
        // The engine's default kernels (oneDNN on Linux), against finite differences directly.
        let x = smoothInput([2, 3, 6, 6], seed: 7), w = smoothInput([4, 3, 3, 3], seed: 8, scale: 0.3), b = smoothInput([4], seed: 9)
        assertGradientsMatchFiniteDifferences([x, w, b]) { p in p[0].conv2d(filter: p[1], bias: p[2], stride: (2, 2), padding: (1, 1)) }
    }
}
