/// Matrix products through `cblas_sgemm`, with transposes folded into the call (never copied).
extension Tensor {
    /// `op(self) · op(other)` where `op` transposes the last two axes when asked.
    ///
    /// Both operands have shape `[batch…, rows, columns]`; batch axes broadcast (a 2-D operand is
    /// shared by every batch). A 2-D `other` with an untransposed `self` is computed as one large GEMM.
    /// In backward, `self` is treated as the *input* and `other` as the *weight* (see ``GEMMRole``):
    /// `x.matmul(w, transposeOther: true)` is a linear layer.
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) -> Tensor {
        precondition(rank >= 2 && other.rank >= 2,
                     "matmul needs operands of rank ≥ 2, got shapes \(shape) and \(other.shape)")
        if other.rank == 2 && rank > 2 && !transposeSelf {
            let k = shape[rank - 1]
            let flat = reshaped([-1, k]).matmul(other, transposeOther: transposeOther)
            return flat.reshaped(Array(shape.dropLast()) + [flat.shape[1]])
        }
        let m = transposeSelf ? shape[rank - 1] : shape[rank - 2]
        let k = transposeSelf ? shape[rank - 2] : shape[rank - 1]
        let kOther = transposeOther ? other.shape[other.rank - 1] : other.shape[other.rank - 2]
        let n = transposeOther ? other.shape[other.rank - 2] : other.shape[other.rank - 1]
        precondition(k == kOther, "matmul inner dimensions differ: \(shape)\(transposeSelf ? "ᵀ" : "") · \(other.shape)\(transposeOther ? "ᵀ" : "") (\(k) vs \(kOther))")
        let batchA = Array(shape.dropLast(2)), batchB = Array(other.shape.dropLast(2))
        guard let batch = Shape.broadcast(batchA, batchB) else {
            preconditionFailure("matmul batch shapes \(batchA) and \(batchB) (from \(shape) and \(other.shape)) cannot be broadcast")
        }
        let plan = BatchedGEMMPlan(batch: batch, batchA: batchA, batchB: batchB, sizeA: m * k, sizeB: k * n, sizeC: m * n)
        var result = plan.destination(shape: batch + [m, n], strides: plan.stridesC)
        plan.run(operation: "matmul", role: .forward, transposeA: transposeSelf, transposeB: transposeOther,
                 m: m, n: n, k: k, a: storage.base, aStrides: plan.stridesA, b: other.storage.base,
                 bStrides: plan.stridesB, c: result.storage.base, cStrides: plan.stridesC)
        // Keep an operand only if the other one's gradient needs it: a frozen weight keeps no input
        // activation alive for backward, a constant input keeps no weight reference.
        let savedA = SavedWeightInput(self, weightTrains: other.requiresGradient), b = requiresGradient ? other.detached() : Tensor.zeros([0])
        let (shapeA, shapeB) = (shape, other.shape)
        result.recordOperation("matmul", inputs: [self, other]) { g, needs in
            let a = needs[1] ? savedA.restored() : Tensor.zeros([0])
            defer { withExtendedLifetime((a, b, g)) {} }
            var gradA: Tensor?, gradB: Tensor?
            if needs[0] {
                let d = plan.destination(shape: shapeA, strides: plan.stridesA)
                if !transposeSelf {
                    plan.run(operation: "matmul", role: .inputGradient, transposeA: false, transposeB: !transposeOther,
                             m: m, n: k, k: n, a: g.storage.base, aStrides: plan.stridesC, b: b.storage.base,
                             bStrides: plan.stridesB, c: d.storage.base, cStrides: plan.stridesA)
                } else {
                    plan.run(operation: "matmul", role: .inputGradient, transposeA: transposeOther, transposeB: true,
                             m: k, n: m, k: n, a: b.storage.base, aStrides: plan.stridesB, b: g.storage.base,
                             bStrides: plan.stridesC, c: d.storage.base, cStrides: plan.stridesA)
                }
                gradA = d
            }
            if needs[1] {
                let d = plan.destination(shape: shapeB, strides: plan.stridesB)
                if !transposeOther {
                    plan.run(operation: "matmul", role: .weightGradient, transposeA: !transposeSelf, transposeB: false,
                             m: k, n: n, k: m, a: a.storage.base, aStrides: plan.stridesA, b: g.storage.base,
                             bStrides: plan.stridesC, c: d.storage.base, cStrides: plan.stridesB)
                } else {
                    plan.run(operation: "matmul", role: .weightGradient, transposeA: true, transposeB: transposeSelf,
                             m: n, n: k, k: m, a: g.storage.base, aStrides: plan.stridesC, b: a.storage.base,
                             bStrides: plan.stridesA, c: d.storage.base, cStrides: plan.stridesB)
                }
                gradB = d
            }
            return [gradA, gradB]
        }
        return result
    }
}

/// Per-batch offsets of the three GEMM operands, with stride 0 for broadcast batch axes; a
/// destination shared by several batches accumulates (`beta = 1`).
struct BatchedGEMMPlan: @unchecked Sendable {
    let batchCount: Int
    let batch: [Int]
    let stridesA: [Int], stridesB: [Int], stridesC: [Int]

    init(batch: [Int], batchA: [Int], batchB: [Int], sizeA: Int, sizeB: Int, sizeC: Int) {
        self.batch = batch
        batchCount = Shape.count(batch)
        stridesA = Shape.broadcastStrides(batchA, to: batch).map { $0 * sizeA }
        stridesB = Shape.broadcastStrides(batchB, to: batch).map { $0 * sizeB }
        stridesC = Shape.strides(batch).map { $0 * sizeC }
    }

    /// Whether a destination with these batch strides is shared by several batches.
    func accumulates(into cStrides: [Int]) -> Bool { cStrides.contains(0) && batchCount > 1 }

    /// A buffer for `run`'s destination: zeroed only when batches accumulate into it (otherwise BLAS
    /// overwrites it with `beta = 0`, and zeroing first would write the whole output twice).
    func destination(shape: [Int], strides: [Int]) -> Tensor {
        accumulates(into: strides) ? Tensor.zeros(shape) : Tensor(shape: shape) { _ in }
    }

    /// `C[i] (+)= op(A[i])·op(B[i])` for every batch index; `C` must start zeroed when batches
    /// accumulate (see ``destination(shape:strides:)``).
    func run(operation: String, role: GEMMRole, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
             a: UnsafeMutablePointer<Float>, aStrides: [Int], b: UnsafeMutablePointer<Float>, bStrides: [Int],
             c: UnsafeMutablePointer<Float>, cStrides: [Int]) {
        KernelCounters.count(gemm: GEMMRecord(operation: operation, role: role, m: m, n: n, k: k, batch: batchCount))
        let accumulate = accumulates(into: cStrides)
        for index in 0..<batchCount {
            var remaining = index, oa = 0, ob = 0, oc = 0
            for axis in stride(from: batch.count - 1, through: 0, by: -1) {
                let i = remaining % batch[axis]
                remaining /= batch[axis]
                oa += i * aStrides[axis]; ob += i * bStrides[axis]; oc += i * cStrides[axis]
            }
            BLAS.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                       a: a + oa, b: b + ob, beta: accumulate ? 1 : 0, c: c + oc)
        }
    }
}

extension Tensor {
    /// `result = a·b` for 2-D tensors into an existing buffer (no allocation, no autodiff): for
    /// benchmarks and optimizer-style inner loops.
    public static func matmul(_ a: Tensor, _ b: Tensor, into result: inout Tensor) {
        precondition(a.rank == 2 && b.rank == 2 && a.shape[1] == b.shape[0] && result.shape == [a.shape[0], b.shape[1]],
                     "matmul(into:) needs [m, k]·[k, n] → [m, n], got \(a.shape)·\(b.shape) → \(result.shape)")
        let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
        result.withUnsafeMutableBufferPointer { c in
            KernelCounters.count(gemm: GEMMRecord(operation: "matmul", role: .forward, m: m, n: n, k: k, batch: 1))
            BLAS.sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: a.storage.base, b: b.storage.base, c: c.baseAddress!)
        }
        result.node = nil
    }
}

extension Tensor {
    /// `self · weightᵀ + bias`, PyTorch's `F.linear`: `self` is `[…, in]`, `weight` `[out, in]`, `bias`
    /// `[out]`. The bias is written into the output first and the GEMM accumulates onto it
    /// (`beta = 1`), as `addmm` does — no separate broadcast pass over the output, no second buffer.
    public func linear(weight: Tensor, bias: Tensor?) -> Tensor {
        guard let bias else { return matmul(weight, transposeOther: true) }
        precondition(weight.rank == 2 && rank >= 1 && shape[rank - 1] == weight.shape[1],
                     "linear: input \(shape) does not match weight \(weight.shape) ([out, in])")
        precondition(bias.shape == [weight.shape[0]], "linear: bias must be [\(weight.shape[0])], got \(bias.shape)")
        if rank != 2 {
            let flat = reshaped([-1, shape[rank - 1]]).linear(weight: weight, bias: bias)
            return flat.reshaped(Array(shape.dropLast()) + [weight.shape[0]])
        }
        let (m, k, n) = (shape[0], shape[1], weight.shape[0])
        var result = Tensor(shape: [m, n]) { out in
            guard let base = out.baseAddress else { return }
            for row in 0..<m { (base + row * n).update(from: bias.storage.base, count: n) }
        }
        KernelCounters.count(gemm: GEMMRecord(operation: "linear", role: .forward, m: m, n: n, k: k, batch: 1))
        BLAS.sgemm(transposeA: false, transposeB: true, m: m, n: n, k: k, a: storage.base, b: weight.storage.base,
                   beta: 1, c: result.storage.base)
        let savedInput = SavedWeightInput(self, weightTrains: weight.requiresGradient)
        let keptWeight = requiresGradient ? weight.detached() : Tensor.zeros([0])
        result.recordOperation("linear", inputs: [self, weight, bias]) { g, needs in
            let input = needs[1] ? savedInput.restored() : Tensor.zeros([0])
            defer { withExtendedLifetime((input, keptWeight, g)) {} }
            var gradients: [Tensor?] = [nil, nil, nil]
            if needs[0] {
                let d = Tensor(shape: [m, k]) { _ in }
                KernelCounters.count(gemm: GEMMRecord(operation: "linear", role: .inputGradient, m: m, n: k, k: n, batch: 1))
                BLAS.sgemm(transposeA: false, transposeB: false, m: m, n: k, k: n, a: g.storage.base, b: keptWeight.storage.base, c: d.storage.base)
                gradients[0] = d
            }
            if needs[1] {
                let d = Tensor(shape: [n, k]) { _ in }
                KernelCounters.count(gemm: GEMMRecord(operation: "linear", role: .weightGradient, m: n, n: k, k: m, batch: 1))
                BLAS.sgemm(transposeA: true, transposeB: false, m: n, n: k, k: m, a: g.storage.base, b: input.storage.base, c: d.storage.base)
                gradients[1] = d
            }
            if needs[2] { gradients[2] = g.sum(alongAxes: [0]) }
            return gradients
        }
        return result
    }
}
