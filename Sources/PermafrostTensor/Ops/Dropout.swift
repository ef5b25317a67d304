/// Inverted dropout with a counter-based mask: the same generator state gives the same mask.
extension Tensor {
    /// Zeroes each element with probability `probability` and scales the rest by `1/(1-p)`.
    /// The generator advances by one draw per element.
    public func dropout(probability: Float, generator: inout PhiloxGenerator) -> Tensor {
        precondition(probability >= 0 && probability < 1, "dropout probability must be in [0, 1), got \(probability)")
        if probability == 0 { return self }
        let scale = 1 / (1 - probability)
        let mask = Tensor(shape: shape) { buffer in
            for i in buffer.indices { buffer[i] = generator.nextUnitFloat() >= probability ? scale : 0 }
        }
        var result = Tensor.zipElements(self, mask, Element.Multiply())
        result.recordOperation("dropout", inputs: [self]) { g, _ in [Tensor.zipElements(g, mask, Element.Multiply())] }
        return result
    }
}
