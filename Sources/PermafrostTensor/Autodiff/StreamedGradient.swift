/// Streaming a gradient through the start of a network, a few images at a time.
///
/// Under freezing, the first layers of a network often train only their biases (SlimFit trains
/// every bias) while their input — the data — needs no gradient. Their output gradient then exists
/// only to be masked (ReLU′) and summed per channel, yet the layer after them would write it for the
/// whole batch at once: for the classifier's first convolution at batch 64 that is a
/// `[64, 32, 28, 28]` tensor (6.1 MiB), the largest single buffer of a SlimFit step.
///
/// Instead, when an operation's input has exactly one consumer and every operation from there back
/// to the leaves can take its output gradient image by image (an element-wise mask, a layer whose
/// input needs no gradient), ``backpropagate(root:seed:targets:retainGraph:)`` hands the producing
/// operation a ``GradientSink`` for that input. The producer writes the input gradient one chunk of
/// images at a time into a small buffer and passes each chunk down the chain; the last operation
/// accumulates its parameter gradients (bias sums, filter gradients) and hands them over when the
/// chunks are done. The full-batch input gradient never exists.
///
/// Results are deterministic: chunks arrive in image order on one thread, and each consumer sums in
/// a fixed order (so they differ from the unstreamed backward only by Float summation order).
final class GradientSink: @unchecked Sendable {
    /// Takes the output gradient of images `images` (a contiguous `[images.count, …]` block, which
    /// the sink may overwrite). Called once per chunk, in image order, on one thread.
    let consume: (_ images: Range<Int>, _ gradient: UnsafeMutablePointer<Float>) -> Void
    /// Called after the last chunk: the gradients of the node's inputs that were not streamed on
    /// (`nil` for the others), as its ordinary backward would return them.
    let finish: () -> [Tensor?]

    init(consume: @escaping (Range<Int>, UnsafeMutablePointer<Float>) -> Void, finish: @escaping () -> [Tensor?]) {
        self.consume = consume
        self.finish = finish
    }

    /// Images per chunk for `imageElements` Floats per image: about 1 MiB of gradient (at least one
    /// image per thread), so the chunk buffer stays small beside what it replaces.
    static func imagesPerChunk(imageElements: Int, batch: Int) -> Int {
        let target = Swift.max(1, GradientStreaming.chunkElements / Swift.max(1, imageElements))
        return Swift.min(batch, Swift.max(target, Parallel.threadCount))
    }
}

/// Builds a node's streamed backward: given which inputs need a gradient and the sinks already
/// planned for them, returns a sink for the node's own output gradient, or `nil` when it cannot
/// stream under these needs (it then runs its ordinary backward).
typealias StreamingConsumer = (_ needs: [Bool], _ inputSinks: [GradientSink?]) -> GradientSink?

/// The chunks of `0..<batch` a producer streams: `imagesPerChunk` images each, in order.
func streamedChunks(batch: Int, imagesPerChunk: Int) -> [Range<Int>] {
    stride(from: 0, to: batch, by: imagesPerChunk).map { $0..<Swift.min(batch, $0 + imagesPerChunk) }
}

/// Whether backward may stream gradients (on by default). Turning it off restores the full-batch
/// form, for comparisons in tests and measurements.
enum GradientStreaming {
    @TaskLocal static var isEnabled = true
    /// Floats per streamed chunk (1 MiB); tests lower it to stream in many chunks.
    @TaskLocal static var chunkElements = 1 << 18

    static func withoutStreaming<R>(_ body: () throws -> R) rethrows -> R {
        try $isEnabled.withValue(false, operation: body)
    }
}
