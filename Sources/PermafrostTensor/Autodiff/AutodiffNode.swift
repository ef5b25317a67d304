import Synchronization

/// One recorded operation (or a trainable leaf) in the define-by-run graph.
///
/// Nodes are numbered in creation order, so sorting the nodes reachable from a loss by that number,
/// newest first, replays the forward pass backwards: the tape.
@usableFromInline
final class AutodiffNode: @unchecked Sendable {
    /// Computes gradients for the inputs from the gradient of this node's output. `needs[i]` is false
    /// when input `i` leads to no trainable leaf: the closure must then skip that input's work and
    /// return `nil` for it. This is where frozen tensors save their backward FLOPs.
    typealias Backward = (_ gradient: Tensor, _ needs: [Bool]) -> [Tensor?]
    /// A backward that may overwrite the incoming gradient when nothing else holds its buffer
    /// (checked with `isKnownUniquelyReferenced`): an element-wise mask, say, then needs no new
    /// buffer of the gradient's size while that gradient is still alive.
    typealias ConsumingBackward = (_ gradient: inout Tensor, _ needs: [Bool]) -> [Tensor?]
    /// A consuming backward that may also be handed a ``GradientSink`` per input: for an input
    /// with a sink it passes that input's gradient to the sink, a chunk of images at a time, and
    /// returns `nil` for it (see StreamedGradient.swift).
    typealias StreamingBackward = (_ gradient: inout Tensor, _ needs: [Bool], _ sinks: [GradientSink?]) -> [Tensor?]

    private static let counter = Atomic<Int>(0)

    let sequence: Int
    let operation: String
    let inputs: [AutodiffNode?]
    /// Dropped once it has run: the closure owns the tensors the forward pass saved, so releasing it
    /// frees them while backward is still under way (as PyTorch does without `retain_graph`), which
    /// lowers the step's peak.
    private(set) var backward: StreamingBackward?
    /// Whether ``backward`` honours sinks (else it is never given any).
    let streamsInputGradients: Bool
    /// How this node takes its output gradient in chunks, when it can (dropped with the saved tensors).
    private(set) var streamingConsumer: StreamingConsumer?
    /// True after ``releaseSavedTensors()``: the node can no longer pass a gradient on.
    private(set) var isReleased = false
    let outputShape: [Int]

    init(leafShape: [Int]) {
        sequence = Self.counter.wrappingAdd(1, ordering: .relaxed).newValue
        operation = "leaf"
        inputs = []
        backward = nil
        streamsInputGradients = false
        streamingConsumer = nil
        outputShape = leafShape
    }

    init(operation: String, inputs: [AutodiffNode?], outputShape: [Int], streamsInputGradients: Bool = false,
         streamingConsumer: StreamingConsumer? = nil, backward: @escaping StreamingBackward) {
        sequence = Self.counter.wrappingAdd(1, ordering: .relaxed).newValue
        self.operation = operation
        self.inputs = inputs
        self.outputShape = outputShape
        self.streamsInputGradients = streamsInputGradients
        self.streamingConsumer = streamingConsumer
        self.backward = backward
    }

    var isLeaf: Bool { backward == nil && !isReleased }

    /// Frees what the forward pass saved for this node's backward.
    func releaseSavedTensors() {
        backward = nil
        streamingConsumer = nil
        isReleased = true
    }
}

/// Whether operations record autodiff nodes in the current task.
public enum GradientRecording {
    @TaskLocal static var isPaused = false

    /// Runs `body` without recording any autodiff node (like `torch.no_grad()`): inference and
    /// optimizer updates use it so they keep no activations.
    public static func withoutRecording<R>(_ body: () throws -> R) rethrows -> R {
        try $isPaused.withValue(true, operation: body)
    }

    /// Whether recording is paused in this task.
    public static var isRecording: Bool { !isPaused }
}

extension Tensor {
    /// Attaches an autodiff node to this freshly computed tensor when any input requires a gradient.
    mutating func recordOperation(
        _ operation: String, inputs: [Tensor], backward: @escaping AutodiffNode.Backward
    ) {
        guard Self.records(inputs) else { return }
        node = AutodiffNode(operation: operation, inputs: inputs.map(\.node), outputShape: shape) { g, needs, _ in backward(g, needs) }
    }

    /// ``recordOperation(_:inputs:backward:)`` for a backward that may overwrite the incoming
    /// gradient in place (see ``AutodiffNode/ConsumingBackward``).
    mutating func recordConsumingOperation(
        _ operation: String, inputs: [Tensor], streamingConsumer: StreamingConsumer? = nil,
        backward: @escaping AutodiffNode.ConsumingBackward
    ) {
        guard Self.records(inputs) else { return }
        node = AutodiffNode(operation: operation, inputs: inputs.map(\.node), outputShape: shape,
                            streamingConsumer: streamingConsumer) { g, needs, _ in backward(&g, needs) }
    }

    /// Records an operation whose backward can stream input gradients into sinks
    /// (``AutodiffNode/StreamingBackward``) and, with `streamingConsumer`, take its own output
    /// gradient in chunks.
    mutating func recordStreamingOperation(
        _ operation: String, inputs: [Tensor], streamingConsumer: StreamingConsumer? = nil,
        backward: @escaping AutodiffNode.StreamingBackward
    ) {
        guard Self.records(inputs) else { return }
        node = AutodiffNode(operation: operation, inputs: inputs.map(\.node), outputShape: shape, streamsInputGradients: true,
                            streamingConsumer: streamingConsumer, backward: backward)
    }

    /// Whether an operation on `inputs` gets a node: some input needs a gradient and recording is on.
    private static func records(_ inputs: [Tensor]) -> Bool {
        inputs.contains(where: { $0.node != nil }) && !GradientRecording.isPaused
    }
}
