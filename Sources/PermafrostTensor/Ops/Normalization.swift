/// Group normalisation and layer normalisation in one fused kernel.
///
/// Both normalise rows of `length` elements to zero mean and unit variance, then apply a per-channel
/// scale and shift. Only the per-row mean and reciprocal standard deviation are kept for backward.
struct NormalizationLayout: Sendable {
    var rows: Int
    var length: Int
    /// Rows per sample that share one affine vector (GroupNorm: groups; LayerNorm: 1).
    var groups: Int
    /// Consecutive elements that share one affine entry (GroupNorm: H·W; LayerNorm: 1).
    var spatial: Int
    var channelsPerGroup: Int { length / spatial }

    @inline(__always)
    func channel(row: Int, element: Int) -> Int { (row % groups) * channelsPerGroup + element / spatial }
}

extension Tensor {
    fileprivate func normalized(_ layout: NormalizationLayout, scale: Tensor?, shift: Tensor?, epsilon: Float, name: String) -> Tensor {
        KernelCounters.count(.normalization, flops: 5 * count)
        let statistics = Tensor.zeros([layout.rows, 2]) // mean, 1/σ
        let output = TensorStorage(uninitializedCount: count)
        let x = SendablePointer(storage.base), y = SendablePointer(output.base), stats = SendablePointer(statistics.storage.base)
        let gamma = scale.map { SendablePointer($0.storage.base) }, beta = shift.map { SendablePointer($0.storage.base) }
        let length = layout.length
        Parallel.forEachChunk(count: layout.rows, minimumChunk: Swift.max(1, 16_384 / Swift.max(length, 1))) { range in
            for row in range {
                let p = x.base + row * length, q = y.base + row * length
                var total: Float = 0
                for j in 0..<length { total += p[j] }
                let mean = total / Float(length)
                var squares: Float = 0
                for j in 0..<length { let d = p[j] - mean; squares += d * d }
                let inverse = 1 / (squares / Float(length) + epsilon).squareRoot()
                stats.base[2 * row] = mean
                stats.base[2 * row + 1] = inverse
                if layout.spatial == 1 && layout.groups == 1 {
                    for j in 0..<length {
                        q[j] = (p[j] - mean) * inverse * (gamma?.base[j] ?? 1) + (beta?.base[j] ?? 0)
                    }
                } else {
                    for c in 0..<layout.channelsPerGroup {
                        let channel = layout.channel(row: row, element: c * layout.spatial)
                        let a = inverse * (gamma?.base[channel] ?? 1)
                        let b = (beta?.base[channel] ?? 0) - mean * a
                        let start = c * layout.spatial
                        for j in start..<(start + layout.spatial) { q[j] = p[j] * a + b }
                    }
                }
            }
        }
        var result = Tensor(shape: shape, storage: output)
        let input = detached()
        var inputs = [self]
        if let scale { inputs.append(scale) }
        if let shift { inputs.append(shift) }
        result.recordOperation(name, inputs: inputs) { g, needs in
            let needsInput = needs[0]
            let needsScale = scale != nil && needs[1]
            let needsShift = shift != nil && needs[scale != nil ? 2 : 1]
            let dScale = Tensor.zeros(scale?.shape ?? [0]), dShift = Tensor.zeros(shift?.shape ?? [0])
            if needsScale || needsShift {
                for row in 0..<layout.rows {
                    let p = input.storage.base + row * length, d = g.storage.base + row * length
                    let mean = statistics.storage.base[2 * row], inverse = statistics.storage.base[2 * row + 1]
                    for j in 0..<length {
                        let c = layout.channel(row: row, element: j)
                        if needsScale { dScale.storage.base[c] += d[j] * (p[j] - mean) * inverse }
                        if needsShift { dShift.storage.base[c] += d[j] }
                    }
                }
            }
            var dInput: Tensor?
            if needsInput {
                let dx = TensorStorage(uninitializedCount: input.count)
                let out = SendablePointer(dx.base), gp = SendablePointer(g.storage.base)
                Parallel.forEachChunk(count: layout.rows, minimumChunk: Swift.max(1, 16_384 / Swift.max(length, 1))) { range in
                    for row in range {
                        let p = x.base + row * length, d = gp.base + row * length, q = out.base + row * length
                        let mean = stats.base[2 * row], inverse = stats.base[2 * row + 1]
                        // dx = σ⁻¹·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), ĝ = g·γ
                        var sumG: Float = 0, sumGX: Float = 0
                        for j in 0..<length {
                            let gh = d[j] * (gamma?.base[layout.channel(row: row, element: j)] ?? 1)
                            sumG += gh
                            sumGX += gh * (p[j] - mean) * inverse
                        }
                        let meanG = sumG / Float(length), meanGX = sumGX / Float(length)
                        for j in 0..<length {
                            let gh = d[j] * (gamma?.base[layout.channel(row: row, element: j)] ?? 1)
                            q[j] = inverse * (gh - meanG - (p[j] - mean) * inverse * meanGX)
                        }
                    }
                }
                dInput = Tensor(shape: input.shape, storage: dx)
            }
            var gradients: [Tensor?] = [dInput]
            if scale != nil { gradients.append(needsScale ? dScale : nil) }
            if shift != nil { gradients.append(needsShift ? dShift : nil) }
            return gradients
        }
        return result
    }

    /// PyTorch's `group_norm`: `[N, C, …]` normalised over each group of `C/groups` channels and all
    /// spatial positions, then scaled and shifted per channel by `scale` and `shift` (`[C]`).
    public func groupNormalized(groups: Int, scale: Tensor? = nil, shift: Tensor? = nil, epsilon: Float = 1e-5) -> Tensor {
        precondition(rank >= 2, "group norm needs [N, C, …], got shape \(shape)")
        let channels = shape[1]
        precondition(groups > 0 && channels % groups == 0, "group norm: \(groups) groups do not divide \(channels) channels (shape \(shape))")
        if let scale { precondition(scale.shape == [channels], "group norm scale must be [\(channels)], got \(scale.shape)") }
        if let shift { precondition(shift.shape == [channels], "group norm shift must be [\(channels)], got \(shift.shape)") }
        let spatial = Shape.product(shape, 2..<rank)
        let layout = NormalizationLayout(rows: shape[0] * groups, length: channels / groups * spatial, groups: groups, spatial: spatial)
        return normalized(layout, scale: scale, shift: shift, epsilon: epsilon, name: "group_norm")
    }

    /// PyTorch's `layer_norm` over the trailing `normalizedAxes` axes, with elementwise `scale` and
    /// `shift` of that trailing shape.
    public func layerNormalized(normalizedAxes: Int = 1, scale: Tensor? = nil, shift: Tensor? = nil, epsilon: Float = 1e-5) -> Tensor {
        precondition(normalizedAxes >= 1 && normalizedAxes <= rank, "layer norm over \(normalizedAxes) trailing axes of shape \(shape)")
        let trailing = Array(shape.suffix(normalizedAxes))
        if let scale { precondition(scale.shape == trailing, "layer norm scale must be \(trailing), got \(scale.shape)") }
        if let shift { precondition(shift.shape == trailing, "layer norm shift must be \(trailing), got \(shift.shape)") }
        let length = Shape.count(trailing)
        let layout = NormalizationLayout(rows: count / Swift.max(length, 1), length: length, groups: 1, spatial: 1)
        return normalized(layout, scale: scale, shift: shift, epsilon: epsilon, name: "layer_norm")
    }
}
