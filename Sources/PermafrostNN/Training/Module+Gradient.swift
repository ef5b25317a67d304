import PermafrostTensor

extension Module {
    /// Runs `body` (a forward pass and loss) with every trainable parameter as an autodiff leaf and
    /// returns the loss with the gradients of the **trainable** parameters, keyed by name.
    ///
    /// Frozen parameters stay plain tensors, so backward does none of their work. Rows frozen by a
    /// plan get zero gradient.
    public func valueAndGradient(_ body: () throws -> Tensor) rethrows -> (value: Tensor, gradients: [String: Tensor]) {
        let trainable = trainableParameters()
        for (_, parameter) in trainable { parameter.value = parameter.value.requiringGradient() }
        defer { for (_, parameter) in trainable { parameter.value = parameter.value.detached() } }
        let value = try body()
        precondition(value.count == 1, "valueAndGradient needs a one-element loss, got shape \(value.shape)")
        let leaves = trainable.map { $0.parameter.value }
        let found = value.gradients(withRespectTo: leaves)
        var gradients: [String: Tensor] = [:]
        for ((name, parameter), gradient) in zip(trainable, found) {
            guard var gradient else { continue }
            if let mask = parameter.trainableRowMask() {
                let rowSize = gradient.count / Swift.max(mask.count, 1)
                gradient.withUnsafeMutableBufferPointer { g in
                    for (row, trains) in mask.enumerated() where !trains {
                        for i in (row * rowSize)..<((row + 1) * rowSize) { g[i] = 0 }
                    }
                }
            }
            gradients[name] = gradient
        }
        return (value.detached(), gradients)
    }
}
