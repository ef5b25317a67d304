import Foundation

/// Mean squared error: `mean((prediction − target)²)`; shapes must match.
public func meanSquaredError(_ prediction: Tensor, _ target: Tensor) -> Tensor {
    precondition(prediction.shape == target.shape, "MSE: prediction shape \(prediction.shape) differs from target shape \(target.shape)")
    return (prediction - target).squared().mean()
}

/// Mean cross-entropy of `logits` (`[N, C]`) against class indices `labels` (`N` of them), fused
/// with log-softmax so the gradient is `(softmax − onehot)/N` in one pass.
public func crossEntropy(logits: Tensor, labels: [Int]) -> Tensor {
    precondition(logits.rank == 2, "cross-entropy logits must be [N, C], got shape \(logits.shape)")
    let n = logits.shape[0], classes = logits.shape[1]
    precondition(labels.count == n, "cross-entropy: \(labels.count) labels for \(n) rows of logits \(logits.shape)")
    for label in labels {
        precondition(label >= 0 && label < classes, "cross-entropy label \(label) is out of range for \(classes) classes")
    }
    let logProbabilities = logits.detached().logSoftmax(alongAxis: 1)
    var total: Double = 0
    logProbabilities.withUnsafeBufferPointer { p in
        for (row, label) in labels.enumerated() { total -= Double(p[row * classes + label]) }
    }
    var loss = Tensor(Float(total / Double(max(n, 1))))
    loss.recordOperation("cross_entropy", inputs: [logits]) { g, _ in
        let scale = g.scalar / Float(max(n, 1))
        let d = Tensor(shape: [n, classes]) { out in
            logProbabilities.withUnsafeBufferPointer { p in
                for i in 0..<(n * classes) { out[i] = Foundation.exp(p[i]) * scale }
            }
            for (row, label) in labels.enumerated() { out[row * classes + label] -= scale }
        }
        return [d]
    }
    return loss
}
