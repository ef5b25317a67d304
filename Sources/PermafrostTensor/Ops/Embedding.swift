/// Row gather (embedding lookup) with a scatter-add backward.
extension Tensor {
    /// Rows `indices` of this `[V, D]` table, shaped `indexShape + [D]`.
    ///
    /// The backward pass adds each row's gradient into the rows it came from (repeats accumulate);
    /// when the table is frozen it does nothing at all.
    public func gatheringRows(_ indices: [Int], indexShape: [Int]? = nil) -> Tensor {
        precondition(rank == 2, "embedding table must be [V, D], got shape \(shape)")
        let shapeOfIndices = indexShape ?? [indices.count]
        precondition(Shape.count(shapeOfIndices) == indices.count, "index shape \(shapeOfIndices) does not hold \(indices.count) indices")
        let vocabulary = shape[0], width = shape[1]
        for index in indices {
            precondition(index >= 0 && index < vocabulary, "embedding index \(index) is out of range for a table of \(vocabulary) rows (shape \(shape))")
        }
        KernelCounters.count(.gather)
        var result = Tensor(shape: shapeOfIndices + [width]) { out in
            for (row, index) in indices.enumerated() {
                (out.baseAddress! + row * width).update(from: storage.base + index * width, count: width)
            }
        }
        let tableShape = shape
        result.recordOperation("embedding", inputs: [self]) { g, _ in
            KernelCounters.count(.scatter, flops: indices.count * width)
            let d = Tensor.zeros(tableShape)
            for (row, index) in indices.enumerated() {
                let dst = d.storage.base + index * width, src = g.storage.base + row * width
                for j in 0..<width { dst[j] += src[j] }
            }
            return [d]
        }
        return result
    }
}
