/// Broadcasting arithmetic: `+ - * /` between tensors and with scalars, and their gradients.
extension Tensor {
    /// The gradient of a broadcast operand: `self` summed over the axes along which `shape` was
    /// broadcast, reshaped to `shape`.
    public func summed(toShape target: [Int]) -> Tensor {
        if shape == target { return self }
        precondition(Shape.broadcast(target, shape) == shape, "cannot sum shape \(shape) down to \(target)")
        let lead = rank - target.count
        var axes = Array(0..<lead)
        for (i, extent) in target.enumerated() where extent == 1 && shape[lead + i] != 1 { axes.append(lead + i) }
        return sum(alongAxes: axes, keepingDimensions: true).reshaped(target)
    }

    public static func + (lhs: Tensor, rhs: Tensor) -> Tensor {
        var result = broadcastElements(lhs, rhs, Element.Add())
        let (sa, sb) = (lhs.shape, rhs.shape)
        result.recordOperation("add", inputs: [lhs, rhs]) { g, needs in
            [needs[0] ? g.summed(toShape: sa) : nil, needs[1] ? g.summed(toShape: sb) : nil]
        }
        return result
    }

    public static func - (lhs: Tensor, rhs: Tensor) -> Tensor {
        var result = broadcastElements(lhs, rhs, Element.Subtract())
        let (sa, sb) = (lhs.shape, rhs.shape)
        result.recordOperation("sub", inputs: [lhs, rhs]) { g, needs in
            [needs[0] ? g.summed(toShape: sa) : nil, needs[1] ? g.mapElements(Element.Negate()).summed(toShape: sb) : nil]
        }
        return result
    }

    public static func * (lhs: Tensor, rhs: Tensor) -> Tensor {
        var result = broadcastElements(lhs, rhs, Element.Multiply())
        // Each operand is kept only for the other's gradient: `x * 0.5` keeps nothing of `x`.
        let keptLeft = rhs.node != nil ? lhs.detached() : nil, keptRight = lhs.node != nil ? rhs.detached() : nil
        let (leftShape, rightShape) = (lhs.shape, rhs.shape)
        result.recordOperation("mul", inputs: [lhs, rhs]) { g, needs in
            [needs[0] ? broadcastElements(g, keptRight!, Element.Multiply()).summed(toShape: leftShape) : nil,
             needs[1] ? broadcastElements(g, keptLeft!, Element.Multiply()).summed(toShape: rightShape) : nil]
        }
        return result
    }

    public static func / (lhs: Tensor, rhs: Tensor) -> Tensor {
        var result = broadcastElements(lhs, rhs, Element.Divide())
        // The quotient is kept only when the divisor may need a gradient.
        let quotient = rhs.node != nil ? result.detached() : nil, divisor = rhs.detached()
        let (leftShape, rightShape) = (lhs.shape, rhs.shape)
        result.recordOperation("div", inputs: [lhs, rhs]) { g, needs in
            [needs[0] ? broadcastElements(g, divisor, Element.Divide()).summed(toShape: leftShape) : nil,
             needs[1] ? broadcastElements(broadcastElements(g, quotient!, Element.Multiply()), divisor, Element.NegatedQuotient())
                .summed(toShape: rightShape) : nil]
        }
        return result
    }

    public static prefix func - (operand: Tensor) -> Tensor {
        var result = operand.mapElements(Element.Negate())
        result.recordOperation("neg", inputs: [operand]) { g, _ in [g.mapElements(Element.Negate())] }
        return result
    }

    public static func + (lhs: Tensor, rhs: Float) -> Tensor { lhs + Tensor(rhs) }
    public static func - (lhs: Tensor, rhs: Float) -> Tensor { lhs - Tensor(rhs) }
    public static func * (lhs: Tensor, rhs: Float) -> Tensor { lhs * Tensor(rhs) }
    public static func / (lhs: Tensor, rhs: Float) -> Tensor { lhs / Tensor(rhs) }
    public static func + (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) + rhs }
    public static func - (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) - rhs }
    public static func * (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) * rhs }
    public static func / (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) / rhs }
}
