import Foundation

/// Which key positions a query may attend to.
public enum AttentionMask: Sendable {
    /// Added to the scores before softmax (use `-inf` to forbid a position); broadcasts to `[…, L, S]`.
    case additive(Tensor)
    /// 1 where attending is allowed, 0 where not; broadcasts to `[…, L, S]` (PyTorch's boolean mask).
    case keep(Tensor)
    /// Query `i` sees keys `0…i` only.
    case causal
}

/// PyTorch's `scaled_dot_product_attention`: `softmax(q·kᵀ·scale + mask)·v`.
///
/// `query` is `[…, L, E]`, `key` `[…, S, E]`, `value` `[…, S, Ev]`; the result is `[…, L, Ev]`.
/// `scale` defaults to `1/√E`. When the three share their batch axes (multi-head attention) and the
/// mask needs no gradient, one fused kernel runs per batch entry: the scale is folded into the
/// `q·kᵀ` GEMM, mask and softmax are applied in place, and backward computes all three gradients
/// from one probability matrix — no scores, scaled-scores or masked-scores tensors in between.
/// Otherwise the operation is composed from matmul, softmax and broadcasting.
public func scaledDotProductAttention(
    query: Tensor, key: Tensor, value: Tensor, mask: AttentionMask? = nil, scale: Float? = nil
) -> Tensor {
    precondition(query.rank >= 2 && key.rank >= 2 && value.rank >= 2,
                 "attention needs [..., L, E] tensors, got query \(query.shape), key \(key.shape), value \(value.shape)")
    precondition(query.shape.last == key.shape.last,
                 "attention query \(query.shape) and key \(key.shape) differ in embedding size")
    precondition(key.shape[key.rank - 2] == value.shape[value.rank - 2],
                 "attention key \(key.shape) and value \(value.shape) differ in sequence length")
    let embedding = query.shape[query.rank - 1]
    let scale = scale ?? 1 / Float(embedding).squareRoot()
    if let fused = FusedAttention(query: query, key: key, value: value, mask: mask) {
        return fused.run(query: query, key: key, value: value, scale: scale)
    }
    var scores = query.matmul(key, transposeOther: true) * scale
    switch mask {
    case .none: break
    case .additive(let bias): scores = scores + bias
    case .keep(let allowed): scores = scores + allowed.mapElements(Element.MaskToAdditive())
    case .causal: scores = scores + causalBias(queries: scores.shape[scores.rank - 2], keys: scores.shape[scores.rank - 1])
    }
    return scores.softmax(alongAxis: -1).matmul(value)
}

/// 0 where key `j ≤` query `i`, −∞ above the diagonal.
private func causalBias(queries l: Int, keys s: Int) -> Tensor {
    Tensor(shape: [l, s]) { b in
        for i in 0..<l { for j in 0..<s { b[i * s + j] = j <= i ? 0 : -.infinity } }
    }
}

/// The plan of a fused attention: sizes, and the additive mask with its strides over `[batch…, L, S]`.
private struct FusedAttention {
    let batch: [Int], batchCount: Int
    let queries: Int, keys: Int, embedding: Int, valueEmbedding: Int
    let bias: Tensor?
    let biasBatchStrides: [Int], biasRowStride: Int, biasColumnStride: Int
    let causal: Bool

    /// nil when the fused kernel does not apply (batch axes differ, or the mask needs a gradient or
    /// does not broadcast to the scores' shape).
    init?(query: Tensor, key: Tensor, value: Tensor, mask: AttentionMask?) {
        batch = Array(query.shape.dropLast(2))
        guard Array(key.shape.dropLast(2)) == batch, Array(value.shape.dropLast(2)) == batch else { return nil }
        batchCount = Shape.count(batch)
        queries = query.shape[query.rank - 2]; keys = key.shape[key.rank - 2]
        embedding = query.shape[query.rank - 1]; valueEmbedding = value.shape[value.rank - 1]
        var bias: Tensor?
        var causal = false
        switch mask {
        case .none: break
        case .additive(let additive):
            guard !additive.requiresGradient else { return nil }
            bias = additive
        case .keep(let allowed): bias = allowed.mapElements(Element.MaskToAdditive())
        case .causal: causal = true
        }
        let scoreShape = batch + [queries, keys]
        if let bias {
            guard bias.rank <= scoreShape.count, Shape.broadcast(bias.shape, scoreShape) == scoreShape else { return nil }
            let strides = Shape.broadcastStrides(bias.shape, to: scoreShape)
            biasBatchStrides = Array(strides.dropLast(2))
            biasRowStride = strides[strides.count - 2]; biasColumnStride = strides[strides.count - 1]
        } else {
            biasBatchStrides = []; biasRowStride = 0; biasColumnStride = 0
        }
        self.bias = bias
        self.causal = causal
    }

    /// Offset of batch entry `index`'s mask in `bias`.
    func biasOffset(_ index: Int) -> Int {
        var remaining = index, offset = 0
        for axis in stride(from: batch.count - 1, through: 0, by: -1) {
            offset += (remaining % batch[axis]) * biasBatchStrides[axis]
            remaining /= batch[axis]
        }
        return offset
    }

    /// `probabilities = softmax(scale·q·kᵀ + mask)` for batch entry `index`, written to `p` (`[L, S]`).
    func probabilities(_ index: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, scale: Float, into p: UnsafeMutablePointer<Float>) {
        let (l, s, e) = (queries, keys, embedding)
        BLAS.sgemm(transposeA: false, transposeB: true, m: l, n: s, k: e, alpha: scale,
                   a: q + index * l * e, b: k + index * s * e, c: p)
        let maskBase = bias.map { $0.storage.base + biasOffset(index) }
        for i in 0..<l {
            let row = p + i * s
            if let maskBase {
                let maskRow = maskBase + i * biasRowStride
                if biasColumnStride == 1 {
                    for j in 0..<s { row[j] += maskRow[j] }
                } else {
                    let constant = maskRow[0]
                    for j in 0..<s { row[j] += constant }
                }
            }
            if causal && i + 1 < s { (row + i + 1).update(repeating: -.infinity, count: s - i - 1) }
            VectorMath.softmaxInPlace(row, s)
        }
    }

    /// Runs `body` over contiguous ranges of batch entries, one per thread.
    func forEachRange(_ body: (Range<Int>) -> Void) {
        Parallel.forEachChunk(count: batchCount, minimumChunk: 1, body)
    }

    func run(query: Tensor, key: Tensor, value: Tensor, scale: Float) -> Tensor {
        let (l, s, ev) = (queries, keys, valueEmbedding)
        let needsGradient = GradientRecording.isRecording && (query.requiresGradient || key.requiresGradient || value.requiresGradient)
        // Backward reads the probabilities for every input's gradient, so they are normally kept whole
        // (the scores before softmax never exist as a tensor). Under activation compression they are
        // recomputed from the query and key instead — exactly, at the cost of one more `q·kᵀ` GEMM:
        // an `[L, S]` matrix per head is several times the size of `q` and `k` when S > 2E.
        let recompute = ActivationCompression.current.compressesStaticActivations
        let kept: Tensor? = needsGradient && !recompute ? Tensor(shape: batch + [l, s]) { _ in } : nil
        var output = Tensor(shape: batch + [l, ev]) { _ in }
        KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .forward, m: l, n: s, k: embedding, batch: batchCount))
        KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .forward, m: l, n: ev, k: s, batch: batchCount))
        KernelCounters.count(.softmax, flops: 4 * batchCount * l * s)
        let q = SendablePointer(query.storage.base), k = SendablePointer(key.storage.base), v = SendablePointer(value.storage.base)
        let o = SendablePointer(output.storage.base), keptPointer = kept.map { SendablePointer($0.storage.base) }
        forEachRange { range in
            let scratch = keptPointer == nil ? ScratchBuffer(count: l * s) : nil
            for index in range {
                let p = keptPointer.map { $0.base + index * l * s } ?? scratch!.base
                probabilities(index, q: q.base, k: k.base, scale: scale, into: p)
                BLAS.sgemm(transposeA: false, transposeB: false, m: l, n: ev, k: s, a: p, b: v.base + index * s * ev, c: o.base + index * l * ev)
            }
        }
        guard needsGradient else { return output }
        let plan = self
        // Each input's gradient needs the other two (and recomputing the probabilities needs q and k).
        let keptQuery = key.requiresGradient || recompute ? query.detached() : nil
        let keptKey = query.requiresGradient || recompute ? key.detached() : nil
        let keptValue = query.requiresGradient || key.requiresGradient ? value.detached() : nil
        output.recordOperation("attention", inputs: [query, key, value]) { g, needs in
            defer { withExtendedLifetime((kept, keptQuery, keptKey, keptValue, g)) {} }
            return plan.backward(gradient: g, needs: needs, probabilities: kept, query: keptQuery, key: keptKey, value: keptValue, scale: scale)
        }
        return output
    }

    /// `probabilities` nil: recompute them from `query` and `key`, one batch entry at a time.
    private func backward(gradient g: Tensor, needs: [Bool], probabilities: Tensor?, query: Tensor?, key: Tensor?, value: Tensor?, scale: Float) -> [Tensor?] {
        let (l, s, e, ev) = (queries, keys, embedding, valueEmbedding)
        let needsScores = needs[0] || needs[1]
        let dq: Tensor? = needs[0] ? Tensor(shape: batch + [l, e]) { _ in } : nil
        let dk: Tensor? = needs[1] ? Tensor(shape: batch + [s, e]) { _ in } : nil
        let dv: Tensor? = needs[2] ? Tensor(shape: batch + [s, ev]) { _ in } : nil
        let p = probabilities.map { SendablePointer($0.storage.base) }, dy = SendablePointer(g.storage.base)
        let qp = query.map { SendablePointer($0.storage.base) }, kp = key.map { SendablePointer($0.storage.base) }
        let vp = value.map { SendablePointer($0.storage.base) }
        let dqp = dq.map { SendablePointer($0.storage.base) }, dkp = dk.map { SendablePointer($0.storage.base) }
        let dvp = dv.map { SendablePointer($0.storage.base) }
        if needs[2] { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: s, n: ev, k: l, batch: batchCount)) }
        if needsScores { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: l, n: s, k: ev, batch: batchCount)) }
        if needs[0] { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: l, n: e, k: s, batch: batchCount)) }
        if needs[1] { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: s, n: e, k: l, batch: batchCount)) }
        if p == nil { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .forward, m: l, n: s, k: e, batch: batchCount)) }
        forEachRange { range in
            let scores = needsScores ? ScratchBuffer(count: l * s) : nil
            let recomputed = p == nil ? ScratchBuffer(count: l * s) : nil
            for index in range {
                let dOut = dy.base + index * l * ev
                let probabilities: UnsafeMutablePointer<Float>
                if let p {
                    probabilities = p.base + index * l * s
                } else {
                    probabilities = recomputed!.base
                    self.probabilities(index, q: qp!.base, k: kp!.base, scale: scale, into: probabilities)
                }
                if let dvp {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: s, n: ev, k: l, a: probabilities, b: dOut, c: dvp.base + index * s * ev)
                }
                guard let scores, let vp else { continue }
                // dP = dO·vᵀ, then dS = P·(dP − Σ dP·P)·scale row by row, in place.
                BLAS.sgemm(transposeA: false, transposeB: true, m: l, n: s, k: ev, a: dOut, b: vp.base + index * s * ev, c: scores.base)
                for i in 0..<l {
                    VectorMath.softmaxBackwardInPlace(gradient: scores.base + i * s, output: probabilities + i * s, s, scale: scale)
                }
                if let dqp, let kp {
                    BLAS.sgemm(transposeA: false, transposeB: false, m: l, n: e, k: s, a: scores.base, b: kp.base + index * s * e, c: dqp.base + index * l * e)
                }
                if let dkp, let qp {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: s, n: e, k: l, a: scores.base, b: qp.base + index * l * e, c: dkp.base + index * s * e)
                }
            }
        }
        return [dq, dk, dv]
    }
}
