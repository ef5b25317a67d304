/// Runs the tape backwards from `root` and returns the gradient of every node in `targets` that
/// `root` depends on.
///
/// Only nodes on a path from `root` to a target do work; an input that reaches no target (a frozen
/// weight, a constant, a tensor upstream of frozen layers only) is reported as not needed to its
/// operation's backward, which then skips it.
///
/// Each node's saved tensors are freed as soon as its backward has run, so a graph can be
/// differentiated once; `retainGraph` keeps them for another pass (PyTorch's `retain_graph`).
func backpropagate(root: Tensor, seed: Tensor, targets: [AutodiffNode], retainGraph: Bool = false) -> [ObjectIdentifier: Tensor] {
    guard let rootNode = root.node else { return [:] }
    precondition(seed.shape == root.shape, "seed gradient shape \(seed.shape) does not match output shape \(root.shape)")

    // Collect the reachable subgraph.
    var visited = Set<ObjectIdentifier>()
    var nodes: [AutodiffNode] = []
    var stack = [rootNode]
    while let node = stack.popLast() {
        guard visited.insert(ObjectIdentifier(node)).inserted else { continue }
        precondition(!node.isReleased, "backward through '\(node.operation)' a second time: its saved tensors were freed by the first backward (pass retainGraph: true to the first, or run the forward pass again)")
        nodes.append(node)
        for case let input? in node.inputs { stack.append(input) }
    }
    nodes.sort { $0.sequence < $1.sequence }

    // Forward sweep: which nodes lead to a target.
    let targetIDs = Set(targets.map(ObjectIdentifier.init))
    var leadsToTarget = Set<ObjectIdentifier>()
    for node in nodes {
        let id = ObjectIdentifier(node)
        if targetIDs.contains(id) || node.inputs.contains(where: { $0.map { leadsToTarget.contains(ObjectIdentifier($0)) } ?? false }) {
            leadsToTarget.insert(id)
        }
    }

    var gradients: [ObjectIdentifier: Tensor] = [ObjectIdentifier(rootNode): seed.detached()]
    var results: [ObjectIdentifier: Tensor] = [:]
    func needs(of node: AutodiffNode) -> [Bool] {
        node.inputs.map { $0.map { leadsToTarget.contains(ObjectIdentifier($0)) } ?? false }
    }
    func accumulate(_ inputGradients: [Tensor?], into node: AutodiffNode) {
        precondition(inputGradients.count == node.inputs.count, "backward of \(node.operation) returned \(inputGradients.count) gradients for \(node.inputs.count) inputs")
        for (input, g) in zip(node.inputs, inputGradients) {
            guard let input, let g, leadsToTarget.contains(ObjectIdentifier(input)) else { continue }
            precondition(g.shape == input.outputShape,
                          "backward of \(node.operation) gave gradient shape \(g.shape) for input shape \(input.outputShape)")
            let inputID = ObjectIdentifier(input)
            if let existing = gradients[inputID] {
                gradients[inputID] = existing + g
            } else {
                gradients[inputID] = g
            }
        }
    }

    // How many operations pass a gradient to each node: a node with one consumer may take it streamed.
    let streaming = GradientStreaming.isEnabled
    var consumerCount: [ObjectIdentifier: Int] = [:]
    for node in nodes { for case let input? in node.inputs { consumerCount[ObjectIdentifier(input), default: 0] += 1 } }
    /// The streamed chain headed by `node` (it first, then the nodes it streams into), when `node`
    /// can take its output gradient in chunks (see StreamedGradient.swift); `nil` otherwise.
    func streamedChain(into node: AutodiffNode) -> [(node: AutodiffNode, sink: GradientSink)]? {
        let id = ObjectIdentifier(node)
        guard let consumer = node.streamingConsumer, !targetIDs.contains(id), consumerCount[id] == 1, gradients[id] == nil else { return nil }
        let nodeNeeds = needs(of: node)
        var chain: [(node: AutodiffNode, sink: GradientSink)] = []
        var sinks: [GradientSink?] = []
        for (input, need) in zip(node.inputs, nodeNeeds) {
            if need, let input, let inner = streamedChain(into: input) {
                sinks.append(inner[0].sink)
                chain += inner
            } else {
                sinks.append(nil)
            }
        }
        guard let sink = consumer(nodeNeeds, sinks) else { return nil }
        return [(node, sink)] + chain
    }

    GradientRecording.withoutRecording {
        for node in nodes.reversed() {
            let id = ObjectIdentifier(node)
            // Removed from the table, `gradient` is usually the only holder of its buffer, which a
            // consuming backward (ReLU's mask) may then overwrite instead of allocating another.
            guard leadsToTarget.contains(id), var gradient = gradients.removeValue(forKey: id) else { continue }
            if targetIDs.contains(id) { results[id] = gradient }
            guard let backward = node.backward else { continue }
            let nodeNeeds = needs(of: node)
            guard nodeNeeds.contains(true) else { continue }
            var sinks = [GradientSink?](repeating: nil, count: node.inputs.count)
            var streamed: [(node: AutodiffNode, sink: GradientSink)] = []
            if node.streamsInputGradients, streaming {
                for (index, input) in node.inputs.enumerated() where nodeNeeds[index] {
                    guard let input, let chain = streamedChain(into: input) else { continue }
                    sinks[index] = chain[0].sink
                    streamed += chain
                }
            }
            let inputGradients = backward(&gradient, nodeNeeds, sinks)
            if !retainGraph { node.releaseSavedTensors() }
            accumulate(inputGradients, into: node)
            // The streamed nodes have seen all their chunks: their parameter gradients are complete.
            for (streamedNode, sink) in streamed {
                let finished = sink.finish()
                if !retainGraph { streamedNode.releaseSavedTensors() }
                accumulate(finished, into: streamedNode)
            }
        }
    }
    return results
}

/// Evaluates `body` at `parameters` and returns its value with the gradients of the **trainable**
/// parameters only.
///
/// A parameter is trainable when it ``Tensor/requiresGradient``; frozen parameters (plain or
/// ``Tensor/detached()`` tensors) get `nil`, and no backward work is done for them.
/// `body` must return a one-element tensor (a loss).
///
/// ```swift
/// let (loss, grads) = valueAndGradient(at: [w.requiringGradient(), b]) { p in
///     crossEntropy(logits: x.matmul(p[0], transposeOther: true) + p[1], labels: y)
/// }
/// // grads[0] is dL/dw, grads[1] is nil: b is frozen.
/// ```
public func valueAndGradient(
    at parameters: [Tensor], in body: ([Tensor]) throws -> Tensor
) rethrows -> (value: Tensor, gradients: [Tensor?]) {
    let leaves = parameters.map { $0.requiresGradient ? $0.requiringGradient() : $0.detached() }
    let value = try body(leaves)
    precondition(value.count == 1, "valueAndGradient needs a one-element result (a loss), got shape \(value.shape)")
    let targets = leaves.compactMap(\.node)
    let found = backpropagate(root: value, seed: Tensor(repeating: 1, shape: value.shape), targets: targets)
    let gradients: [Tensor?] = leaves.map { leaf in
        guard let node = leaf.node else { return nil }
        return found[ObjectIdentifier(node)] ?? Tensor.zeros(leaf.shape)
    }
    return (value.detached(), gradients)
}

/// Named form of ``valueAndGradient(at:in:)``: returns gradients keyed by name for the trainable
/// parameters only.
public func valueAndGradient(
    at parameters: [String: Tensor], in body: ([String: Tensor]) throws -> Tensor
) rethrows -> (value: Tensor, gradients: [String: Tensor]) {
    let names = Array(parameters.keys)
    let (value, gradients) = try valueAndGradient(at: names.map { parameters[$0]! }) { leaves in
        try body(Dictionary(uniqueKeysWithValues: zip(names, leaves)))
    }
    var result: [String: Tensor] = [:]
    for (name, gradient) in zip(names, gradients) where gradient != nil { result[name] = gradient }
    return (value, result)
}

extension Tensor {
    /// Gradients of this tensor (seeded with `seed`, default ones) with respect to `leaves`, which must
    /// be tensors created by ``requiringGradient()``. Leaves it does not depend on get zeros; leaves
    /// that do not require a gradient get `nil`.
    ///
    /// The graph's saved tensors are freed as backward consumes them; pass `retainGraph: true` to
    /// differentiate the same graph again.
    public func gradients(withRespectTo leaves: [Tensor], seed: Tensor? = nil, retainGraph: Bool = false) -> [Tensor?] {
        let targets = leaves.compactMap(\.node)
        let found = backpropagate(root: self, seed: seed ?? Tensor(repeating: 1, shape: shape), targets: targets, retainGraph: retainGraph)
        return leaves.map { leaf in
            guard let node = leaf.node else { return nil }
            return found[ObjectIdentifier(node)] ?? Tensor.zeros(leaf.shape)
        }
    }
}
