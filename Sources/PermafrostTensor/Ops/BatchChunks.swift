/// Running part of a network a few batch rows at a time.
extension Tensor {
    /// `body` applied to consecutive chunks of at most `rowsPerChunk` rows (axis 0) of this tensor,
    /// the results joined along axis 0 as they are made.
    ///
    /// For a `body` that treats rows independently (convolutions, element-wise activations,
    /// linear layers — not batch norm) this is `body(self)`, bit for bit, gradients included. What
    /// changes is memory: only one chunk's intermediate tensors exist at a time, and what a chunk's
    /// operations save for backward is all that outlives it. For the first layers of a CNN under
    /// freezing this is the difference that matters: the stem's large Float32 outputs (the first
    /// convolution's, 4× the image's size per channel) are needed only while the next layer reads
    /// them, because a frozen consumer keeps nothing and an 8-bit one keeps a quarter. Backward
    /// replays the chunks one after another (each chunk's nodes are newer than the previous
    /// chunk's), so their transient gradients are chunk-sized too, and the joined output's
    /// gradient is split into the chunks' in place, without a copy.
    ///
    /// A `self` that needs a gradient works but pays a full-size gradient per chunk (a slice's
    /// backward); the intended input is data.
    public func mapBatchChunks(rowsPerChunk: Int, _ body: (Tensor) throws -> Tensor) rethrows -> Tensor {
        precondition(rowsPerChunk > 0, "rowsPerChunk must be positive, got \(rowsPerChunk)")
        precondition(rank >= 1, "mapBatchChunks needs a batch axis, got a scalar")
        let rows = shape[0]
        guard rows > rowsPerChunk else { return try body(self) }

        var storage: TensorStorage?
        var rowShape: [Int] = [], rowSize = 0
        var chunkNodes: [AutodiffNode?] = [], chunkRows: [Int] = []
        for start in stride(from: 0, to: rows, by: rowsPerChunk) {
            let end = Swift.min(rows, start + rowsPerChunk)
            let output = try body(slice(alongAxis: 0, from: start, to: end))
            precondition(output.rank >= 1 && output.shape[0] == end - start,
                         "mapBatchChunks: body must keep the batch axis (\(end - start) rows in, shape \(output.shape) out)")
            if storage == nil {
                rowShape = Array(output.shape.dropFirst())
                rowSize = Shape.count(rowShape)
                storage = TensorStorage(uninitializedCount: rows * rowSize)
            }
            precondition(Array(output.shape.dropFirst()) == rowShape,
                         "mapBatchChunks: chunk outputs differ in shape (\(rowShape) then \(Array(output.shape.dropFirst())))")
            (storage!.base + start * rowSize).update(from: output.storage.base, count: (end - start) * rowSize)
            chunkNodes.append(output.node)
            chunkRows.append(end - start)
        }
        KernelCounters.count(.copy)
        var result = Tensor(shape: [rows] + rowShape, storage: storage!)
        guard chunkNodes.contains(where: { $0 != nil }), GradientRecording.isRecording else { return result }
        result.node = AutodiffNode(operation: "batch chunks", inputs: chunkNodes, outputShape: result.shape) { g, needs, _ in
            // Handed over for good (nothing else holds it), the gradient's rows become the chunks'
            // gradients in place: no second buffer of the batch's size while backward replays them.
            let inPlace = isKnownUniquelyReferenced(&g.storage)
            var firstRow = 0
            return chunkRows.enumerated().map { index, count in
                defer { firstRow += count }
                guard needs[index] else { return nil }
                guard inPlace else { return g.slice(alongAxis: 0, from: firstRow, to: firstRow + count) }
                let view = TensorStorage(viewing: g.storage, offset: firstRow * rowSize, count: count * rowSize)
                return Tensor(shape: [count] + rowShape, storage: view)
            }
        }
        return result
    }
}
