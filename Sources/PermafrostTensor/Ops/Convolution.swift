/// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) by im2col + GEMM.
///
/// The batch is unfolded into one column matrix `[C·KH·KW, N·Ho·Wo]` so each group is a single
/// large GEMM (small per-image GEMMs waste most of BLAS's speed); batches whose columns would
/// exceed ``Conv2DGeometry/columnBudget`` elements are processed in chunks. Backward recomputes the
/// columns only when the filter needs a gradient, and runs the `col2im` GEMM only when the input does.
struct Conv2DGeometry: Sendable {
    var batch: Int, inChannels: Int, height: Int, width: Int
    var outChannels: Int, kernelHeight: Int, kernelWidth: Int
    var strideH: Int, strideW: Int, padH: Int, padW: Int, dilationH: Int, dilationW: Int
    var groups: Int
    var outHeight: Int { (height + 2 * padH - dilationH * (kernelHeight - 1) - 1) / strideH + 1 }
    var outWidth: Int { (width + 2 * padW - dilationW * (kernelWidth - 1) - 1) / strideW + 1 }
    var groupInChannels: Int { inChannels / groups }
    var groupOutChannels: Int { outChannels / groups }
    var columnRows: Int { inChannels * kernelHeight * kernelWidth }
    var groupColumnRows: Int { groupInChannels * kernelHeight * kernelWidth }

    /// Largest column matrix, in elements, built at once (64 MiB).
    static let columnBudget = 16 << 20

    /// Fills `columns` (`[C·KH·KW, count·Ho·Wo]`) from images `first..<first+count` of `input`.
    func im2col(input: UnsafePointer<Float>, first: Int, count: Int, columns: UnsafeMutablePointer<Float>) {
        let oh = outHeight, ow = outWidth, spatial = oh * ow, width = count * spatial
        KernelCounters.count(.im2col, flops: columnRows * width)
        let source = SendablePointer(UnsafeMutablePointer(mutating: input)), destination = SendablePointer(columns)
        let geometry = self
        Parallel.forEachChunk(count: columnRows, minimumChunk: Swift.max(1, 16_384 / Swift.max(width, 1))) { rows in
            for row in rows {
                let kw = row % geometry.kernelWidth
                let kh = (row / geometry.kernelWidth) % geometry.kernelHeight
                let c = row / (geometry.kernelWidth * geometry.kernelHeight)
                let out = destination.base + row * width
                for n in 0..<count {
                    let image = source.base + ((first + n) * geometry.inChannels + c) * geometry.height * geometry.width
                    let o = out + n * spatial
                    for y in 0..<oh {
                        let iy = y * geometry.strideH - geometry.padH + kh * geometry.dilationH
                        let line = o + y * ow
                        if iy < 0 || iy >= geometry.height {
                            for x in 0..<ow { line[x] = 0 }
                            continue
                        }
                        let inputLine = image + iy * geometry.width
                        let x0 = kw * geometry.dilationW - geometry.padW
                        if geometry.strideW == 1 && x0 >= 0 && x0 + ow <= geometry.width {
                            line.update(from: inputLine + x0, count: ow)
                        } else {
                            for x in 0..<ow {
                                let ix = x * geometry.strideW + x0
                                line[x] = ix >= 0 && ix < geometry.width ? inputLine[ix] : 0
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds `columns` back into the gradient of images `first..<first+count` (the adjoint of im2col).
    func col2im(columns: UnsafePointer<Float>, first: Int, count: Int, inputGradient: UnsafeMutablePointer<Float>) {
        let oh = outHeight, ow = outWidth, spatial = oh * ow, width = count * spatial
        KernelCounters.count(.col2im, flops: columnRows * width)
        let source = SendablePointer(UnsafeMutablePointer(mutating: columns)), destination = SendablePointer(inputGradient)
        let geometry = self
        let perChannel = kernelHeight * kernelWidth
        // Channels are independent destinations, so they split across threads without races.
        Parallel.forEachChunk(count: inChannels, minimumChunk: Swift.max(1, 16_384 / Swift.max(width * perChannel, 1))) { channels in
            for c in channels {
                for r in 0..<perChannel {
                    let row = c * perChannel + r
                    let kw = r % geometry.kernelWidth, kh = r / geometry.kernelWidth
                    let column = source.base + row * width
                    for n in 0..<count {
                        let image = destination.base + ((first + n) * geometry.inChannels + c) * geometry.height * geometry.width
                        let o = column + n * spatial
                        for y in 0..<oh {
                            let iy = y * geometry.strideH - geometry.padH + kh * geometry.dilationH
                            if iy < 0 || iy >= geometry.height { continue }
                            let line = image + iy * geometry.width, values = o + y * ow
                            let x0 = kw * geometry.dilationW - geometry.padW
                            for x in 0..<ow {
                                let ix = x * geometry.strideW + x0
                                if ix >= 0 && ix < geometry.width { line[ix] += values[x] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Images per chunk so the column matrix stays within budget.
    var imagesPerChunk: Int { Swift.max(1, Swift.min(batch, Self.columnBudget / Swift.max(1, columnRows * outHeight * outWidth))) }
}

extension Tensor {
    /// 2-D convolution of `self` (`[N, C, H, W]`) with `filter` (`[O, C/groups, KH, KW]`) and an
    /// optional `bias` (`[O]`), as PyTorch's `conv2d`.
    public func conv2d(
        filter: Tensor, bias: Tensor? = nil,
        stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1
    ) -> Tensor {
        precondition(rank == 4, "conv2d input must be [N, C, H, W], got shape \(shape)")
        precondition(filter.rank == 4, "conv2d filter must be [O, C/groups, KH, KW], got shape \(filter.shape)")
        precondition(groups >= 1 && shape[1] % groups == 0 && filter.shape[0] % groups == 0,
                     "conv2d groups=\(groups) must divide input channels (shape \(shape)) and output channels (filter \(filter.shape))")
        precondition(filter.shape[1] * groups == shape[1],
                     "conv2d filter \(filter.shape) with groups=\(groups) expects \(filter.shape[1] * groups) input channels, input shape is \(shape)")
        precondition(stride.0 > 0 && stride.1 > 0 && dilation.0 > 0 && dilation.1 > 0 && padding.0 >= 0 && padding.1 >= 0,
                     "conv2d stride \(stride) and dilation \(dilation) must be positive, padding \(padding) non-negative")
        if let bias { precondition(bias.shape == [filter.shape[0]], "conv2d bias must be [\(filter.shape[0])], got \(bias.shape)") }
        let g = Conv2DGeometry(batch: shape[0], inChannels: shape[1], height: shape[2], width: shape[3],
                               outChannels: filter.shape[0], kernelHeight: filter.shape[2], kernelWidth: filter.shape[3],
                               strideH: stride.0, strideW: stride.1, padH: padding.0, padW: padding.1,
                               dilationH: dilation.0, dilationW: dilation.1, groups: groups)
        precondition(g.outHeight > 0 && g.outWidth > 0, "conv2d output would be empty: input \(shape), filter \(filter.shape), padding \(padding), dilation \(dilation)")
        let spatial = g.outHeight * g.outWidth
        var result = Tensor.zeros([g.batch, g.outChannels, g.outHeight, g.outWidth])
        let chunk = g.imagesPerChunk
        let columns = UnsafeMutablePointer<Float>.allocate(capacity: g.columnRows * chunk * spatial)
        let product = UnsafeMutablePointer<Float>.allocate(capacity: g.outChannels * chunk * spatial)
        defer { columns.deallocate(); product.deallocate() }
        for first in Swift.stride(from: 0, to: g.batch, by: chunk) {
            let count = Swift.min(chunk, g.batch - first), width = count * spatial
            g.im2col(input: storage.base, first: first, count: count, columns: columns)
            KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .forward, m: g.groupOutChannels, n: width, k: g.groupColumnRows, batch: g.groups))
            for group in 0..<groups {
                BLAS.sgemm(transposeA: false, transposeB: false, m: g.groupOutChannels, n: width, k: g.groupColumnRows,
                           a: filter.storage.base + group * g.groupOutChannels * g.groupColumnRows,
                           b: columns + group * g.groupColumnRows * width,
                           c: product + group * g.groupOutChannels * width)
            }
            // [O, n, HW] → [n, O, HW], adding the bias on the way.
            let out = result.storage.base
            for o in 0..<g.outChannels {
                let b = bias?.storage.base[o] ?? 0
                for n in 0..<count {
                    let src = product + (o * count + n) * spatial
                    let dst = out + ((first + n) * g.outChannels + o) * spatial
                    for i in 0..<spatial { dst[i] = src[i] + b }
                }
            }
        }
        let input = detached(), weights = filter.detached()
        result.recordOperation("conv2d", inputs: bias.map { [self, filter, $0] } ?? [self, filter]) { gradient, needs in
            let inputGradient: Tensor? = needs[0] ? Tensor.zeros(input.shape) : nil
            let filterGradient: Tensor? = needs[1] ? Tensor.zeros(weights.shape) : nil
            let columns = UnsafeMutablePointer<Float>.allocate(capacity: g.columnRows * chunk * spatial)
            let permuted = UnsafeMutablePointer<Float>.allocate(capacity: g.outChannels * chunk * spatial)
            defer { columns.deallocate(); permuted.deallocate() }
            for first in Swift.stride(from: 0, to: g.batch, by: chunk) {
                let count = Swift.min(chunk, g.batch - first), width = count * spatial
                guard needs[0] || needs[1] else { break }
                for n in 0..<count {
                    for o in 0..<g.outChannels {
                        (permuted + (o * count + n) * spatial).update(from: gradient.storage.base + ((first + n) * g.outChannels + o) * spatial, count: spatial)
                    }
                }
                if let filterGradient {
                    g.im2col(input: input.storage.base, first: first, count: count, columns: columns)
                    KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .weightGradient, m: g.groupOutChannels, n: g.groupColumnRows, k: width, batch: g.groups))
                    for group in 0..<g.groups {
                        BLAS.sgemm(transposeA: false, transposeB: true, m: g.groupOutChannels, n: g.groupColumnRows, k: width,
                                   a: permuted + group * g.groupOutChannels * width,
                                   b: columns + group * g.groupColumnRows * width,
                                   beta: first == 0 ? 0 : 1,
                                   c: filterGradient.storage.base + group * g.groupOutChannels * g.groupColumnRows)
                    }
                }
                if let inputGradient {
                    KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .inputGradient, m: g.groupColumnRows, n: width, k: g.groupOutChannels, batch: g.groups))
                    for group in 0..<g.groups {
                        BLAS.sgemm(transposeA: true, transposeB: false, m: g.groupColumnRows, n: width, k: g.groupOutChannels,
                                   a: weights.storage.base + group * g.groupOutChannels * g.groupColumnRows,
                                   b: permuted + group * g.groupOutChannels * width,
                                   c: columns + group * g.groupColumnRows * width)
                    }
                    g.col2im(columns: columns, first: first, count: count, inputGradient: inputGradient.storage.base)
                }
            }
            var gradients: [Tensor?] = [inputGradient, filterGradient]
            if needs.count == 3 {
                gradients.append(needs[2] ? gradient.sum(alongAxes: [0, 2, 3]) : nil)
            }
            return gradients
        }
        return result
    }
}
