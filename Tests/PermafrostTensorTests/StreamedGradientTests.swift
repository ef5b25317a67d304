import XCTest
@testable import PermafrostTensor

/// Streamed backward through a network's first layers (StreamedGradient.swift): the same gradients
/// as the full-batch backward, without the full-batch input gradient of the layer after them.
final class StreamedGradientTests: XCTestCase {
    struct Stem {
        var x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
        var stride2: Int
        var trainsFirstFilter: Bool
    }

    /// `x → conv1 (+b1) → ReLU → conv2 (+b2, 2 channels) → loss`: the input needs no gradient, so conv1's
    /// output gradient is needed only for b1 (and w1 when it trains).
    func stem(channels: Int, size: Int, batch: Int, stride2: Int, trainsFirstFilter: Bool, seed: UInt64) -> Stem {
        var g = PhiloxGenerator(seed: seed)
        return Stem(x: Tensor(randomNormal: [batch, 2, size, size], generator: &g),
                    w1: Tensor(randomNormal: [channels, 2, 3, 3], generator: &g) * 0.3,
                    b1: Tensor(randomNormal: [channels], generator: &g) * 0.1,
                    w2: Tensor(randomNormal: [2, channels, 3, 3], generator: &g) * 0.2,
                    b2: Tensor(randomNormal: [2], generator: &g) * 0.1,
                    stride2: stride2, trainsFirstFilter: trainsFirstFilter)
    }

    /// Gradients of (b1, w1 when it trains, w2, b2) and the largest live bytes during backward.
    func gradients(_ s: Stem, streaming: Bool, chunkElements: Int) -> (gradients: [Tensor], backwardPeak: Int) {
        let w1 = s.trainsFirstFilter ? s.w1.requiringGradient() : s.w1
        let leaves = [s.b1.requiringGradient(), s.w2.requiringGradient(), s.b2.requiringGradient()] + (s.trainsFirstFilter ? [w1] : [])
        let h = s.x.conv2d(filter: w1, bias: leaves[0], padding: (1, 1)).relu()
        let y = h.conv2d(filter: leaves[1], bias: leaves[2], stride: (s.stride2, s.stride2), padding: (1, 1))
        // Weighted by the input, so the output gradient differs per image yet stays small beside
        // conv2's input gradient (2 channels against `channels`): the backward peak is conv2's.
        let loss = (y * y.detached()).mean()
        MemoryStatistics.resetPeak()
        let before = MemoryStatistics.liveBytes
        // The engine's own kernels on both sides (streaming uses them), so the peaks differ only by
        // what streaming changes.
        let found = ConvolutionKernels.withNativeKernels {
            GradientStreaming.$chunkElements.withValue(chunkElements) {
                streaming ? loss.gradients(withRespectTo: leaves) : GradientStreaming.withoutStreaming { loss.gradients(withRespectTo: leaves) }
            }
        }
        return (found.map { $0! }, MemoryStatistics.peakBytes - before)
    }

    func testStreamedStemGivesTheFullBatchGradientsWithoutTheInputGradient() throws {
        // Stride 1 (the transposed-convolution input gradient) and 2 (col2im); a frozen or trained
        // first filter; 8 channels of 12×12 (mask words aligned) and 6 of 7×7 (not aligned).
        for (channels, size, stride, trains) in [(8, 12, 1, false), (8, 12, 2, true), (6, 7, 2, false), (6, 7, 1, true)] {
            let s = stem(channels: channels, size: size, batch: 10, stride2: stride, trainsFirstFilter: trains, seed: UInt64(channels * size + stride))
            let reference = gradients(s, streaming: false, chunkElements: 1 << 18)
            // Three images per chunk: four chunks, the last one short.
            let streamed = gradients(s, streaming: true, chunkElements: 3 * channels * size * size)
            let label = "\(channels)×\(size)², stride \(stride), first filter \(trains ? "trains" : "frozen")"
            for (name, (a, b)) in zip(["b1", "w2", "b2", "w1"], zip(streamed.gradients, reference.gradients)) {
                assertClose(a, b, tolerance: 2e-5, "\(name), \(label)")
            }
            // The full-batch input gradient of conv2 (10 images) is replaced by a 3-image chunk; the
            // streamed first layer holds one filter gradient per thread (and the bias sums) meanwhile.
            let inputGradientBytes = 10 * channels * size * size * 4, chunkBytes = 3 * channels * size * size * 4
            let accumulators = trains ? (Parallel.threadCount + 1) * s.w1.count * 4 : 0
            XCTAssertLessThanOrEqual(streamed.backwardPeak, reference.backwardPeak - inputGradientBytes + chunkBytes + accumulators + channels * 4, label)
            print("streamed stem \(label): backward peak \(reference.backwardPeak) → \(streamed.backwardPeak) bytes")
        }
    }

    func testStreamingNeedsASingleConsumer() throws {
        // conv1's output also feeds the loss directly: its gradient sums two contributions, so it
        // must exist whole, and the streamed backward must not be used (same values, same peak).
        let s = stem(channels: 8, size: 12, batch: 6, stride2: 1, trainsFirstFilter: false, seed: 3)
        func run(_ streaming: Bool) -> (Tensor, Int) {
            let b1 = s.b1.requiringGradient()
            let h = s.x.conv2d(filter: s.w1, bias: b1, padding: (1, 1)).relu()
            let loss = (h.conv2d(filter: s.w2, padding: (1, 1)) * h.mean()).mean()
            MemoryStatistics.resetPeak()
            let before = MemoryStatistics.liveBytes
            let g = streaming ? loss.gradients(withRespectTo: [b1]) : GradientStreaming.withoutStreaming { loss.gradients(withRespectTo: [b1]) }
            return (g[0]!, MemoryStatistics.peakBytes - before)
        }
        let (streamed, streamedPeak) = run(true), (reference, referencePeak) = run(false)
        XCTAssertEqual(streamed.scalars, reference.scalars)
        XCTAssertEqual(streamedPeak, referencePeak)
    }

    func testStreamedStemWithEightBitWeightInputs() throws {
        // 8-bit saved inputs are restored image by image inside the streamed filter gradient too.
        let s = stem(channels: 8, size: 12, batch: 7, stride2: 2, trainsFirstFilter: true, seed: 11)
        let (reference, streamed) = ActivationCompression.with(.int8WithWeightInputs) {
            (gradients(s, streaming: false, chunkElements: 1 << 18), gradients(s, streaming: true, chunkElements: 2 * 8 * 144))
        }
        for (a, b) in zip(streamed.gradients, reference.gradients) { assertClose(a, b, tolerance: 2e-5, "int8 weight inputs") }
    }
}
