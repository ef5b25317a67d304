import PermafrostTensor

/// OrthoReg's penalty on the weight updates of fine-tuning (task-feature specialisation for task
/// arithmetic): for every trainable matrix, with ΔW = W − W_pretrained, ‖ΔWᵀΔW − I‖_F (‖ΔWΔWᵀ − I‖_F
/// when ΔW has fewer rows than columns), summed over the matrices — the form of the reference code
/// (lshangge/OrthoReg, `attention_only_finetune.py`: Frobenius norm, not squared; 2-D weights only).
/// Add λ times it to the task loss.
public struct OrthogonalUpdateRegularizer {
    /// The pretrained value of every regularised matrix.
    public let reference: [(name: String, value: Tensor)]

    /// Snapshots `model`'s trainable 2-D weights as the pretrained reference.
    public init(pretrained model: Module) {
        reference = model.trainableParameters().filter { $0.parameter.shape.count == 2 }.map { ($0.name, $0.parameter.value.detached()) }
    }

    /// The penalty at `model`'s current weights (differentiable; frozen matrices contribute nothing).
    public func penalty(_ model: Module) -> Tensor {
        let parameters = Dictionary(model.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        var total: Tensor?
        for (name, pretrained) in reference {
            guard let parameter = parameters[name], !parameter.isFrozen else { continue }
            let delta = parameter.value - pretrained
            let (rows, columns) = (delta.shape[0], delta.shape[1])
            let gram = rows < columns ? delta.matmul(delta, transposeOther: true) : delta.matmul(delta, transposeSelf: true)
            let n = min(rows, columns)
            let identity = Tensor(shape: [n, n], scalars: (0..<(n * n)).map { $0 % (n + 1) == 0 ? 1 : 0 })
            let term = (gram - identity).squared().sum().sqrt()
            total = total.map { $0 + term } ?? term
        }
        return total ?? Tensor(0)
    }
}
