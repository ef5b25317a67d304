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
        return fused.run(query: query, key: key, value: value, packed: false, outputShape: Array(query.shape.dropLast()) + [value.shape[value.rank - 1]], scale: scale)
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

/// Multi-head self-attention on a packed projection, as PyTorch's `nn.MultiheadAttention` computes it
/// when query, key and value are one tensor.
///
/// `packed` is `[B, S, 3E]`: the output of the single input projection `x·W_inᵀ + b_in`, with the
/// queries, keys and values side by side on the last axis (PyTorch's `in_proj_weight` order). Head `h`
/// of each part is the column slice `h·D ..< (h+1)·D` (D = E / `heads`). The result is the heads'
/// attention outputs merged back to `[B, S, E]`, ready for the output projection.
///
/// Nothing is permuted: every head's GEMMs read `packed` and write the result in place through row
/// strides, so the four `[B, H, S, D]` head copies (and their gradients) of the composed form never
/// exist. `mask` broadcasts to `[B, heads, S, S]` and must not need a gradient.
public func multiHeadSelfAttention(packed: Tensor, heads: Int, mask: AttentionMask? = nil, scale: Float? = nil) -> Tensor {
    precondition(packed.rank == 3 && heads > 0 && packed.shape[2] % (3 * heads) == 0,
                 "multi-head self-attention needs a packed [B, S, 3E] projection with E divisible by \(heads) heads, got \(packed.shape)")
    let (batch, length, embedding) = (packed.shape[0], packed.shape[1], packed.shape[2] / 3)
    let headSize = embedding / heads
    guard let plan = FusedAttention(batch: [batch, heads], queries: length, keys: length, embedding: headSize, valueEmbedding: headSize, mask: mask,
                                    layouts: .packedHeads(length: length, embedding: embedding, heads: heads)) else {
        preconditionFailure("multi-head self-attention: the mask must broadcast to [\(batch), \(heads), \(length), \(length)] and need no gradient")
    }
    return plan.run(query: packed, key: packed, value: packed, packed: true, outputShape: [batch, length, embedding], scale: scale ?? 1 / Float(headSize).squareRoot())
}

/// Where batch entry `index`'s `[rows, columns]` matrix starts in its buffer, and its row stride.
///
/// Entries are numbered `batch·heads + head`, so both a contiguous `[N, rows, columns]` tensor
/// (one "head") and one part of a packed `[B, S, 3E]` projection (each head a column slice) fit.
struct MatrixLayout {
    var heads = 1
    var batchStride: Int
    var headStride = 0
    var rowStride: Int
    var start = 0

    /// Matrices stored one after another.
    static func contiguous(rows: Int, columns: Int) -> MatrixLayout { MatrixLayout(batchStride: rows * columns, rowStride: columns) }

    @inline(__always) func offset(_ index: Int) -> Int {
        heads == 1 ? start + index * batchStride : start + (index / heads) * batchStride + (index % heads) * headStride
    }
}

/// The layouts of the four matrices of one attention: query, key, value and output (the output's
/// gradient shares the output's layout, each input's gradient its input's).
struct AttentionLayouts {
    let query: MatrixLayout, key: MatrixLayout, value: MatrixLayout, output: MatrixLayout

    static func contiguous(queries l: Int, keys s: Int, embedding e: Int, valueEmbedding ev: Int) -> AttentionLayouts {
        AttentionLayouts(query: .contiguous(rows: l, columns: e), key: .contiguous(rows: s, columns: e),
                         value: .contiguous(rows: s, columns: ev), output: .contiguous(rows: l, columns: ev))
    }

    /// Heads as column slices of a packed `[B, S, 3E]` projection; the output merged to `[B, S, E]`.
    static func packedHeads(length s: Int, embedding e: Int, heads: Int) -> AttentionLayouts {
        let d = e / heads
        func part(_ index: Int) -> MatrixLayout { MatrixLayout(heads: heads, batchStride: s * 3 * e, headStride: d, rowStride: 3 * e, start: index * e) }
        return AttentionLayouts(query: part(0), key: part(1), value: part(2),
                                output: MatrixLayout(heads: heads, batchStride: s * e, headStride: d, rowStride: e))
    }
}

/// The plan of a fused attention: sizes, layouts, and the additive mask with its strides over `[batch…, L, S]`.
private struct FusedAttention {
    let batch: [Int], batchCount: Int
    let queries: Int, keys: Int, embedding: Int, valueEmbedding: Int
    let layouts: AttentionLayouts
    let bias: Tensor?
    let biasBatchStrides: [Int], biasRowStride: Int, biasColumnStride: Int
    let causal: Bool

    /// nil when the fused kernel does not apply (batch axes differ, or the mask needs a gradient or
    /// does not broadcast to the scores' shape).
    init?(query: Tensor, key: Tensor, value: Tensor, mask: AttentionMask?) {
        let batch = Array(query.shape.dropLast(2))
        guard Array(key.shape.dropLast(2)) == batch, Array(value.shape.dropLast(2)) == batch else { return nil }
        let (l, s) = (query.shape[query.rank - 2], key.shape[key.rank - 2])
        let (e, ev) = (query.shape[query.rank - 1], value.shape[value.rank - 1])
        self.init(batch: batch, queries: l, keys: s, embedding: e, valueEmbedding: ev, mask: mask,
                  layouts: .contiguous(queries: l, keys: s, embedding: e, valueEmbedding: ev))
    }

    init?(batch: [Int], queries: Int, keys: Int, embedding: Int, valueEmbedding: Int, mask: AttentionMask?, layouts: AttentionLayouts) {
        self.batch = batch
        batchCount = Shape.count(batch)
        self.queries = queries; self.keys = keys
        self.embedding = embedding; self.valueEmbedding = valueEmbedding
        self.layouts = layouts
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
                   a: q + layouts.query.offset(index), lda: layouts.query.rowStride,
                   b: k + layouts.key.offset(index), ldb: layouts.key.rowStride, c: p)
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

    /// The attention of `query`, `key` and `value`, recorded for backward when any of them needs a
    /// gradient. `packed`: the three are one tensor (read through the layouts), which gets one gradient.
    func run(query: Tensor, key: Tensor, value: Tensor, packed: Bool, outputShape: [Int], scale: Float) -> Tensor {
        let (l, s, ev) = (queries, keys, valueEmbedding)
        let needsGradient = GradientRecording.isRecording && (query.requiresGradient || key.requiresGradient || value.requiresGradient)
        // Backward reads the probabilities for every input's gradient, so they are normally kept whole
        // (the scores before softmax never exist as a tensor). Under activation compression they are
        // recomputed from the query and key instead — exactly, at the cost of one more `q·kᵀ` GEMM:
        // an `[L, S]` matrix per head is several times the size of `q` and `k` when S > 2E.
        let recompute = ActivationCompression.current.compressesStaticActivations
        let kept: Tensor? = needsGradient && !recompute ? Tensor(shape: batch + [l, s]) { _ in } : nil
        var output = Tensor(shape: outputShape) { _ in }
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
                BLAS.sgemm(transposeA: false, transposeB: false, m: l, n: ev, k: s, a: p,
                           b: v.base + layouts.value.offset(index), ldb: layouts.value.rowStride,
                           c: o.base + layouts.output.offset(index), ldc: layouts.output.rowStride)
            }
        }
        guard needsGradient else { return output }
        let plan = self
        if packed {
            // One input: its gradient holds all three parts, so backward needs all of it.
            let keptPacked = query.detached()
            output.recordOperation("attention", inputs: [query]) { g, _ in
                defer { withExtendedLifetime((kept, keptPacked, g)) {} }
                let gradient = Tensor(shape: keptPacked.shape) { _ in }
                plan.backward(gradient: g, needs: [true, true, true], probabilities: kept, query: keptPacked, key: keptPacked, value: keptPacked,
                              into: [gradient, gradient, gradient], scale: scale)
                return [gradient]
            }
            return output
        }
        // Each input's gradient needs the other two (and recomputing the probabilities needs q and k).
        let keptQuery = key.requiresGradient || recompute ? query.detached() : nil
        let keptKey = query.requiresGradient || recompute ? key.detached() : nil
        let keptValue = query.requiresGradient || key.requiresGradient ? value.detached() : nil
        let (queryShape, keyShape, valueShape) = (query.shape, key.shape, value.shape)
        output.recordOperation("attention", inputs: [query, key, value]) { g, needs in
            defer { withExtendedLifetime((kept, keptQuery, keptKey, keptValue, g)) {} }
            let gradients: [Tensor?] = zip(needs, [queryShape, keyShape, valueShape]).map { need, shape in need ? Tensor(shape: shape) { _ in } : nil }
            plan.backward(gradient: g, needs: needs, probabilities: kept, query: keptQuery, key: keptKey, value: keptValue,
                          into: gradients, scale: scale)
            return gradients
        }
        return output
    }

    /// Writes the gradients that `needs` asks for into `gradients` (query, key, value; one tensor may
    /// serve several through the layouts). `probabilities` nil: recompute them from `query` and `key`,
    /// one batch entry at a time.
    private func backward(gradient g: Tensor, needs: [Bool], probabilities: Tensor?, query: Tensor?, key: Tensor?, value: Tensor?,
                          into gradients: [Tensor?], scale: Float) {
        let (l, s, e, ev) = (queries, keys, embedding, valueEmbedding)
        let needsScores = needs[0] || needs[1]
        let p = probabilities.map { SendablePointer($0.storage.base) }, dy = SendablePointer(g.storage.base)
        let qp = query.map { SendablePointer($0.storage.base) }, kp = key.map { SendablePointer($0.storage.base) }
        let vp = value.map { SendablePointer($0.storage.base) }
        let dqp = needs[0] ? gradients[0].map { SendablePointer($0.storage.base) } : nil
        let dkp = needs[1] ? gradients[1].map { SendablePointer($0.storage.base) } : nil
        let dvp = needs[2] ? gradients[2].map { SendablePointer($0.storage.base) } : nil
        let layouts = self.layouts
        if needs[2] { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: s, n: ev, k: l, batch: batchCount)) }
        if needsScores { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: l, n: s, k: ev, batch: batchCount)) }
        if needs[0] { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: l, n: e, k: s, batch: batchCount)) }
        if needs[1] { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .inputGradient, m: s, n: e, k: l, batch: batchCount)) }
        if p == nil { KernelCounters.count(gemm: GEMMRecord(operation: "attention", role: .forward, m: l, n: s, k: e, batch: batchCount)) }
        forEachRange { range in
            let scores = needsScores ? ScratchBuffer(count: l * s) : nil
            let recomputed = p == nil ? ScratchBuffer(count: l * s) : nil
            for index in range {
                let dOut = dy.base + layouts.output.offset(index), dOutStride = layouts.output.rowStride
                let probabilities: UnsafeMutablePointer<Float>
                if let p {
                    probabilities = p.base + index * l * s
                } else {
                    probabilities = recomputed!.base
                    self.probabilities(index, q: qp!.base, k: kp!.base, scale: scale, into: probabilities)
                }
                if let dvp {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: s, n: ev, k: l, a: probabilities, b: dOut, ldb: dOutStride,
                               c: dvp.base + layouts.value.offset(index), ldc: layouts.value.rowStride)
                }
                guard let scores, let vp else { continue }
                // dP = dO·vᵀ, then dS = P·(dP − Σ dP·P)·scale row by row, in place.
                BLAS.sgemm(transposeA: false, transposeB: true, m: l, n: s, k: ev, a: dOut, lda: dOutStride,
                           b: vp.base + layouts.value.offset(index), ldb: layouts.value.rowStride, c: scores.base)
                for i in 0..<l {
                    VectorMath.softmaxBackwardInPlace(gradient: scores.base + i * s, output: probabilities + i * s, s, scale: scale)
                }
                if let dqp, let kp {
                    BLAS.sgemm(transposeA: false, transposeB: false, m: l, n: e, k: s, a: scores.base,
                               b: kp.base + layouts.key.offset(index), ldb: layouts.key.rowStride,
                               c: dqp.base + layouts.query.offset(index), ldc: layouts.query.rowStride)
                }
                if let dkp, let qp {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: s, n: e, k: l, a: scores.base,
                               b: qp.base + layouts.query.offset(index), ldb: layouts.query.rowStride,
                               c: dkp.base + layouts.key.offset(index), ldc: layouts.key.rowStride)
                }
            }
        }
    }
}
