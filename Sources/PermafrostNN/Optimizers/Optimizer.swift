import PermafrostTensor

/// Why an optimizer step was refused. A refused step changes no parameter.
public enum OptimizerError: Error, Equatable, CustomStringConvertible {
    case unknownParameter(name: String)
    case shapeMismatch(name: String, parameter: [Int], gradient: [Int])
    case nonFiniteGradient(name: String)

    public var description: String {
        switch self {
        case let .unknownParameter(name): return "gradient for '\(name)', which the model does not have"
        case let .shapeMismatch(name, p, g): return "gradient for '\(name)' has shape \(g), the parameter has \(p)"
        case let .nonFiniteGradient(name): return "gradient for '\(name)' contains NaN or infinity; the step was skipped"
        }
    }
}

/// An optimizer over a module's trainable parameters.
///
/// State (momentum, moments) is created for a tensor the first time it is updated and never for a
/// frozen tensor; frozen tensors and frozen rows receive no update of any kind, weight decay included.
public protocol Optimizer: AnyObject {
    /// The rate the next ``step(_:gradients:)`` uses (a schedule may set it every step).
    var learningRate: Float { get set }
    /// Applies one update from `gradients` (keyed by parameter name) to `model`.
    func step(_ model: Module, gradients: [String: Tensor]) throws(OptimizerError)
    /// Bytes of optimizer state held now.
    var stateBytes: Int { get }
    /// Drops the state of these tensors (for tensors frozen for good).
    func releaseState(for names: Set<String>)
    /// Names of tensors that have state.
    var tensorsWithState: Set<String> { get }
}

extension Optimizer {
    /// Validates every gradient before any parameter changes, and returns the parameters to update
    /// (trainable ones only; gradients of frozen parameters are ignored).
    func updatable(_ model: Module, _ gradients: [String: Tensor]) throws(OptimizerError) -> [(String, Parameter, Tensor)] {
        let parameters = Dictionary(model.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        var result: [(String, Parameter, Tensor)] = []
        for name in gradients.keys.sorted() {
            guard let parameter = parameters[name] else { throw .unknownParameter(name: name) }
            let gradient = gradients[name]!
            guard gradient.shape == parameter.shape else { throw .shapeMismatch(name: name, parameter: parameter.shape, gradient: gradient.shape) }
            guard !parameter.isFrozen else { continue }
            let finite = gradient.withUnsafeBufferPointer { g in g.allSatisfy { $0.isFinite } }
            guard finite else { throw .nonFiniteGradient(name: name) }
            result.append((name, parameter, gradient))
        }
        return result
    }
}

/// Element ranges of a parameter that an optimizer may write: everything, or only the rows not
/// frozen by a row-range plan.
func writableRanges(_ parameter: Parameter) -> [Range<Int>] {
    guard let mask = parameter.trainableRowMask() else { return [0..<parameter.value.count] }
    let rowSize = parameter.value.count / Swift.max(mask.count, 1)
    var ranges: [Range<Int>] = []
    var start: Int?
    for (row, trains) in mask.enumerated() {
        if trains, start == nil { start = row }
        if !trains, let s = start { ranges.append((s * rowSize)..<(row * rowSize)); start = nil }
    }
    if let s = start { ranges.append((s * rowSize)..<(mask.count * rowSize)) }
    return ranges
}

/// Scales all gradients so their global L2 norm is at most `maxNorm` (PyTorch's
/// `clip_grad_norm_`: factor `maxNorm / (norm + 1e-6)`, capped at 1). Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ gradients: inout [String: Tensor], maxNorm: Float) -> Float {
    var total: Double = 0
    for gradient in gradients.values {
        gradient.withUnsafeBufferPointer { g in for v in g { total += Double(v) * Double(v) } }
    }
    let norm = Float(total.squareRoot())
    let factor = maxNorm / (norm + 1e-6)
    if factor < 1 {
        for name in gradients.keys { gradients[name] = (gradients[name]! * factor).detached() }
    }
    return norm
}
