import XCTest
@testable import PermafrostTensor

/// `mapBatchChunks`: the same values and gradients as one full-batch pass, with the chunked layers'
/// intermediate outputs a chunk in size.
final class BatchChunksTests: XCTestCase {
    struct Stem {
        var x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor
    }

    func stem(batch: Int, seed: UInt64) -> Stem {
        var g = PhiloxGenerator(seed: seed)
        return Stem(x: Tensor(randomNormal: [batch, 1, 12, 12], generator: &g),
                    w1: Tensor(randomNormal: [16, 1, 3, 3], generator: &g) * 0.4,
                    b1: Tensor(randomNormal: [16], generator: &g) * 0.1,
                    w2: Tensor(randomNormal: [4, 16, 3, 3], generator: &g) * 0.1,
                    b2: Tensor(randomNormal: [4], generator: &g) * 0.1,
                    w3: Tensor(randomNormal: [4 * 6 * 6, 3], generator: &g) * 0.1)
    }

    /// Loss, gradients of every trainable leaf, and the peak live bytes of forward and backward.
    /// `conv2` trains or not; everything runs under `compression` and with the engine's kernels.
    func run(_ s: Stem, chunk: Int?, conv2Trains: Bool, compression: ActivationCompression)
        -> (loss: Float, output: Tensor, gradients: [Tensor], forwardPeak: Int) {
        ConvolutionKernels.withNativeKernels {
            ActivationCompression.with(compression) {
                let b1 = s.b1.requiringGradient(), w1 = s.w1.requiringGradient()
                let w2 = conv2Trains ? s.w2.requiringGradient() : s.w2, b2 = s.b2.requiringGradient()
                let w3 = s.w3.requiringGradient()
                func layers(_ x: Tensor) -> Tensor {
                    let h = x.conv2d(filter: w1, bias: b1, padding: (1, 1)).relu()
                    return h.conv2d(filter: w2, bias: b2, stride: (2, 2), padding: (1, 1)).relu()
                }
                MemoryStatistics.resetPeak()
                let before = MemoryStatistics.liveBytes
                let features = chunk.map { s.x.mapBatchChunks(rowsPerChunk: $0, layers) } ?? layers(s.x)
                let forwardPeak = MemoryStatistics.peakBytes - before
                let logits = features.reshaped([s.x.shape[0], 4 * 6 * 6]).matmul(w3)
                let loss = (logits * logits).mean()
                let leaves = [w1, b1, b2, w3] + (conv2Trains ? [w2] : [])
                let gradients = loss.gradients(withRespectTo: leaves).map { $0! }
                return (loss.scalars[0], features.detached(), gradients, forwardPeak)
            }
        }
    }

    func testChunkedStemGivesTheFullBatchValuesAndGradients() {
        let s = stem(batch: 20, seed: 3)
        for conv2Trains in [false, true] {
            for compression in [ActivationCompression.none, .int8WithWeightInputs] {
                let whole = run(s, chunk: nil, conv2Trains: conv2Trains, compression: compression)
                // 20 rows in chunks of 6: three full chunks and a short one.
                let chunked = run(s, chunk: 6, conv2Trains: conv2Trains, compression: compression)
                let context = "conv2 trains: \(conv2Trains), \(compression)"
                XCTAssertEqual(chunked.output.shape, whole.output.shape)
                // Each image's forward is the same arithmetic in either form.
                XCTAssertEqual(chunked.output.scalars, whole.output.scalars, context)
                XCTAssertEqual(chunked.loss, whole.loss, context)
                for (index, (a, b)) in zip(chunked.gradients, whole.gradients).enumerated() {
                    XCTAssertEqual(a.shape, b.shape)
                    // Weight gradients sum over images in another grouping; an 8-bit weight input
                    // is quantised per chunk (its own max-abs scale), so those differ by rounding.
                    let tolerance: Float = compression == .none ? 1e-5 : 2e-2
                    let scale = b.scalars.map { Swift.abs($0) }.max()! + 1e-12
                    let error = zip(a.scalars, b.scalars).map { Swift.abs($0 - $1) }.max()!
                    XCTAssertLessThanOrEqual(error / scale, tolerance, "\(context), gradient \(index)")
                }
            }
        }
    }

    func testChunkedStemKeepsLessDuringForward() {
        // conv1's Float32 output (16 channels at 12×12, 9 KiB an image) exists for 8 images at a
        // time instead of 64; conv2 is frozen, so it keeps nothing of it.
        let s = stem(batch: 64, seed: 4)
        let whole = run(s, chunk: nil, conv2Trains: false, compression: .int8)
        let chunked = run(s, chunk: 8, conv2Trains: false, compression: .int8)
        let conv1Output = 64 * 16 * 12 * 12 * 4
        XCTAssertGreaterThanOrEqual(whole.forwardPeak, conv1Output)
        XCTAssertLessThan(chunked.forwardPeak, whole.forwardPeak - conv1Output / 2,
                          "forward peak \(chunked.forwardPeak) B chunked vs \(whole.forwardPeak) B whole")
    }

    func testChunksAreJoinedInOrderAndPassGradientsToTheInput() {
        let x = Tensor(shape: [3, 2], scalars: [1, 2, 3, 4, 5, 6]).requiringGradient()
        // No more rows than a chunk: the body runs once, as it is.
        XCTAssertEqual(x.mapBatchChunks(rowsPerChunk: 4) { $0 * 2 }.scalars, [2, 4, 6, 8, 10, 12])
        let y = x.mapBatchChunks(rowsPerChunk: 2) { $0 * $0 }
        XCTAssertEqual(y.scalars, [1, 4, 9, 16, 25, 36])
        let gradient = y.sum().gradients(withRespectTo: [x])[0]!
        XCTAssertEqual(gradient.scalars, [2, 4, 6, 8, 10, 12])
    }
}
