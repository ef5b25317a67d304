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
        let length = layout.length, segment = layout.spatial, segments = layout.channelsPerGroup
        Parallel.forEachChunk(count: layout.rows, minimumChunk: Swift.max(1, 16_384 / Swift.max(length, 1))) { range in
            for row in range {
                let p = x.base + row * length, q = y.base + row * length
                let mean = VectorMath.sum(p, length) / Float(length)
                let inverse = 1 / (VectorMath.sumOfSquares(p, length, shift: mean) / Float(length) + epsilon).squareRoot()
                stats.base[2 * row] = mean
                stats.base[2 * row + 1] = inverse
                if segment == 1 {
                    // Layer norm: one affine entry per element.
                    for j in 0..<length {
                        q[j] = (p[j] - mean) * inverse * (gamma?.base[j] ?? 1) + (beta?.base[j] ?? 0)
                    }
                } else {
                    for c in 0..<segments {
                        let channel = layout.channel(row: row, element: c * segment)
                        let a = inverse * (gamma?.base[channel] ?? 1)
                        let b = (beta?.base[channel] ?? 0) - mean * a
                        let ps = p + c * segment, qs = q + c * segment
                        for j in 0..<segment { qs[j] = ps[j] * a + b }
                    }
                }
            }
        }
        var result = Tensor(shape: shape, storage: output)
        // With a frozen scale the input is kept only for the input gradient (the shift's gradient
        // needs none of it): with int8 activation compression that copy is kept in 8 bits (the
        // statistics stay exact).
        let frozen = scale?.node == nil
        let packed = frozen && ActivationCompression.current.compressesStaticActivations && node != nil && GradientRecording.isRecording ? Int8Copy(detached()) : nil
        let kept: Tensor? = packed == nil ? detached() : nil
        var inputs = [self]
        if let scale { inputs.append(scale) }
        if let shift { inputs.append(shift) }
        let inputShape = shape
        result.recordOperation(name, inputs: inputs) { g, needs in
            // A group norm restores an 8-bit input one row at a time, into a per-thread buffer; a
            // layer norm (whose parameter gradients run down columns) restores it whole.
            let input = kept ?? (segment == 1 ? packed!.restored() : Tensor.zeros([0]))
            let rowPacked = kept == nil && segment != 1 ? packed : nil
            let x = SendablePointer(input.storage.base)
            // The raw pointers below borrow these buffers: keep them alive for the whole backward.
            withExtendedLifetime((statistics, input, g)) {}
            let needsInput = needs[0]
            let needsScale = scale != nil && needs[1]
            let needsShift = shift != nil && needs[scale != nil ? 2 : 1]
            let gp = SendablePointer(g.storage.base)
            let dScale = Tensor.zeros(scale?.shape ?? [0]), dShift = Tensor.zeros(shift?.shape ?? [0])
            var dInput: Tensor?
            if segment == 1 {
                // Layer norm: parameter gradients summed over rows, split across threads by column.
                if needsScale || needsShift {
                    let ds = SendablePointer(dScale.storage.base), dh = SendablePointer(dShift.storage.base)
                    Parallel.forEachChunk(count: length, minimumChunk: Swift.max(1, 16_384 / Swift.max(layout.rows, 1))) { columns in
                        for row in 0..<layout.rows {
                            let p = x.base + row * length, d = gp.base + row * length
                            let mean = stats.base[2 * row], inverse = stats.base[2 * row + 1]
                            for j in columns {
                                if needsScale { ds.base[j] += d[j] * (p[j] - mean) * inverse }
                                if needsShift { dh.base[j] += d[j] }
                            }
                        }
                    }
                }
                if needsInput {
                    let dx = TensorStorage(uninitializedCount: input.count)
                    let out = SendablePointer(dx.base)
                    Parallel.forEachChunk(count: layout.rows, minimumChunk: Swift.max(1, 16_384 / Swift.max(length, 1))) { range in
                        for row in range {
                            let p = x.base + row * length, d = gp.base + row * length, q = out.base + row * length
                            let mean = stats.base[2 * row], inverse = stats.base[2 * row + 1]
                            // dx = σ⁻¹·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), ĝ = g·γ
                            var sumG: Float = 0, sumGX: Float = 0
                            for j in 0..<length {
                                let gh = d[j] * (gamma?.base[j] ?? 1)
                                sumG += gh
                                sumGX += gh * (p[j] - mean)
                            }
                            let meanG = sumG / Float(length), meanGX = sumGX * inverse / Float(length)
                            for j in 0..<length {
                                q[j] = inverse * (d[j] * (gamma?.base[j] ?? 1) - meanG - (p[j] - mean) * inverse * meanGX)
                            }
                        }
                    }
                    dInput = Tensor(shape: input.shape, storage: dx)
                }
            } else {
                // Group norm: per (row, channel) the sums Σg and Σg·x over the channel's spatial run
                // give everything: the parameter gradients and the row means dx needs.
                let partial = UnsafeMutablePointer<Float>.allocate(capacity: layout.rows * segments * 2)
                defer { partial.deallocate() }
                let sums = SendablePointer(partial)
                let dx = needsInput ? TensorStorage(uninitializedCount: Shape.count(inputShape)) : nil
                let out = dx.map { SendablePointer($0.base) }
                Parallel.forEachChunk(count: layout.rows, minimumChunk: Swift.max(1, 16_384 / Swift.max(length, 1))) { range in
                    let restoredRow = rowPacked.map { _ in ScratchBuffer(count: length) }
                    for row in range {
                        var p = x.base + row * length
                        if let rowPacked, let restoredRow {
                            rowPacked.restore(row * length..<(row + 1) * length, into: restoredRow.base)
                            p = restoredRow.base
                        }
                        let d = gp.base + row * length
                        let mean = stats.base[2 * row], inverse = stats.base[2 * row + 1]
                        var sumG: Float = 0, sumGX: Float = 0
                        for c in 0..<segments {
                            let sd = VectorMath.sum(d + c * segment, segment)
                            let sdx = VectorMath.dot(d + c * segment, p + c * segment, segment)
                            sums.base[(row * segments + c) * 2] = sd
                            sums.base[(row * segments + c) * 2 + 1] = (sdx - mean * sd) * inverse
                            let gammaC = gamma?.base[layout.channel(row: row, element: c * segment)] ?? 1
                            sumG += gammaC * sd
                            sumGX += gammaC * (sdx - mean * sd)
                        }
                        guard let out else { continue }
                        let meanG = sumG / Float(length), meanGX = sumGX * inverse / Float(length)
                        let q = out.base + row * length
                        for c in 0..<segments {
                            let gammaC = gamma?.base[layout.channel(row: row, element: c * segment)] ?? 1
                            // dx = σ⁻¹·γ_c·g − σ⁻¹·meanG − σ⁻²·meanGX·(x − μ), as a·g + b·x + k per run.
                            let a = inverse * gammaC, b = -inverse * inverse * meanGX
                            let k = -inverse * meanG + inverse * inverse * meanGX * mean
                            let ds = d + c * segment, ps = p + c * segment, qs = q + c * segment
                            for j in 0..<segment { qs[j] = a * ds[j] + b * ps[j] + k }
                        }
                    }
                }
                if needsScale || needsShift {
                    for row in 0..<layout.rows {
                        for c in 0..<segments {
                            let channel = layout.channel(row: row, element: c * segment)
                            if needsShift { dShift.storage.base[channel] += partial[(row * segments + c) * 2] }
                            if needsScale { dScale.storage.base[channel] += partial[(row * segments + c) * 2 + 1] }
                        }
                    }
                }
                if let dx { dInput = Tensor(shape: inputShape, storage: dx) }
            }
            var gradients: [Tensor?] = [dInput]
            if scale != nil { gradients.append(needsScale ? dScale : nil) }
            if shift != nil { gradients.append(needsShift ? dShift : nil) }
            withExtendedLifetime((statistics, input, g)) {}
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
