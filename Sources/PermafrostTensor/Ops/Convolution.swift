import Synchronization

/// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) by im2col + GEMM, one image at a time.
///
/// Threads take whole images: each unfolds its image into a private column matrix
/// `[C·KH·KW, Ho·Wo]` that stays in L2, multiplies it by the filter straight into the output (no
/// permutation), and in backward accumulates a private filter gradient. This measured faster than
/// unfolding the whole batch into one large GEMM, whose 30 MB column matrix streamed through memory
/// three times and needed a transposed copy of the output. A 1×1, stride-1, unpadded convolution
/// skips im2col entirely. Backward recomputes the columns only when the filter needs a gradient and
/// runs the `col2im` GEMM only when the input needs one.
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

    /// 1×1, stride 1, no padding: the image already is its column matrix.
    var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0
    }

    /// Runs `body` over contiguous ranges of images, one range per thread (or one range when the
    /// batch is smaller than the thread count, so each GEMM can split across threads instead).
    func forEachImage(_ body: (Range<Int>) -> Void) {
        let threads = Parallel.threadCount
        if batch < threads || threads == 1 {
            body(0..<batch)
            return
        }
        let per = (batch + threads - 1) / threads
        Parallel.run(threads) { t in
            let start = t * per, end = Swift.min(batch, start + per)
            if start < end { body(start..<end) }
        }
    }

    /// Stride 2, no dilation, and an output exactly half the (even) input: the downsampling
    /// convolutions of CNNs and UNets (3×3, padding 1). Their columns come from the input's four
    /// stride-2 phase planes (``im2colFromPhases(image:columns:)``).
    var halvesEvenInput: Bool {
        strideH == 2 && strideW == 2 && dilationH == 1 && dilationW == 1 && height % 2 == 0 && width % 2 == 0
            && outHeight == height / 2 && outWidth == width / 2
    }

    /// Fills `columns` (`[C·KH·KW, Ho·Wo]`) from one image (`[C, H, W]`).
    func im2col(image: UnsafePointer<Float>, columns: UnsafeMutablePointer<Float>) {
        if halvesEvenInput {
            im2colFromPhases(image: image, columns: columns)
            return
        }
        let oh = outHeight, ow = outWidth, spatial = oh * ow
        // Valid output ranges per kernel row and column, computed once: integer division per column
        // row cost more than the copying on small images.
        withUnsafeTemporaryAllocation(of: (offset: Int, first: Int, end: Int).self, capacity: kernelHeight + kernelWidth) { table in
            for kh in 0..<kernelHeight {
                let y0 = kh * dilationH - padH
                let first = y0 >= 0 ? 0 : Swift.min(oh, (-y0 + strideH - 1) / strideH)
                let lastInput = height - 1 - y0
                table[kh] = (y0, first, lastInput < 0 ? first : Swift.max(first, Swift.min(oh, lastInput / strideH + 1)))
            }
            for kw in 0..<kernelWidth {
                let x0 = kw * dilationW - padW
                let (lo, hi) = validOutputColumns(offset: x0)
                table[kernelHeight + kw] = (x0, lo, hi)
            }
            var out = columns
            for c in 0..<inChannels {
                let plane = image + c * height * width
                for kh in 0..<kernelHeight {
                    let (y0, firstY, endY) = table[kh]
                    for kw in 0..<kernelWidth {
                        defer { out += spatial }
                        let (x0, lo, hi) = table[kernelHeight + kw]
                        out.update(repeating: 0, count: firstY * ow)
                        (out + endY * ow).update(repeating: 0, count: (oh - endY) * ow)
                        guard endY > firstY, hi > lo else {
                            (out + firstY * ow).update(repeating: 0, count: (endY - firstY) * ow)
                            continue
                        }
                        if strideW == 1 && strideH == 1 && ow == width {
                            copyShiftedRows(firstY..<endY, of: plane, rowOffset: y0, columnOffset: x0, validColumns: lo..<hi, into: out)
                            continue
                        }
                        for y in firstY..<endY {
                            let inputLine = plane + (y * strideH + y0) * width
                            let line = out + y * ow
                            for x in 0..<lo { line[x] = 0 }
                            if strideW == 1 {
                                (line + lo).update(from: inputLine + lo + x0, count: hi - lo)
                            } else {
                                for x in lo..<hi { line[x] = inputLine[x * strideW + x0] }
                            }
                            for x in hi..<ow { line[x] = 0 }
                        }
                    }
                }
            }
        }
    }

    /// im2col for ``halvesEvenInput`` geometries. Each channel is split once into its four phase
    /// planes (even/odd rows × even/odd columns, each `[H/2, W/2]`, the output's size); kernel tap
    /// `(kh, kw)` then reads one phase plane shifted by whole rows and columns, so its column block is
    /// one contiguous shifted copy (``copyShiftedRows``) instead of a strided gather per output row —
    /// 14-pixel rows at 28×28, where the per-row loop cost more than the copying.
    func im2colFromPhases(image: UnsafePointer<Float>, columns: UnsafeMutablePointer<Float>) {
        let (oh, ow, w) = (outHeight, outWidth, width)
        let spatial = oh * ow
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * spatial) { buffer in
            let phases = buffer.baseAddress!
            var out = columns
            for c in 0..<inChannels {
                let plane = image + c * height * w
                for i in 0..<oh {
                    let even = plane + 2 * i * w, odd = even + w
                    let row = i * ow
                    for j in 0..<ow {
                        phases[row + j] = even[2 * j]
                        phases[spatial + row + j] = even[2 * j + 1]
                        phases[2 * spatial + row + j] = odd[2 * j]
                        phases[3 * spatial + row + j] = odd[2 * j + 1]
                    }
                }
                for kh in 0..<kernelHeight {
                    // Input row 2y + kh − pad = 2·(y + rowOffset) + phaseRow.
                    let ry = kh - padH, phaseRow = ry & 1, rowOffset = (ry - phaseRow) / 2
                    let firstY = Swift.min(oh, Swift.max(0, -rowOffset)), endY = Swift.max(firstY, Swift.min(oh, oh - rowOffset))
                    for kw in 0..<kernelWidth {
                        defer { out += spatial }
                        let rx = kw - padW, phaseColumn = rx & 1, columnOffset = (rx - phaseColumn) / 2
                        let lo = Swift.min(ow, Swift.max(0, -columnOffset)), hi = Swift.max(lo, Swift.min(ow, ow - columnOffset))
                        out.update(repeating: 0, count: firstY * ow)
                        (out + endY * ow).update(repeating: 0, count: (oh - endY) * ow)
                        guard endY > firstY, hi > lo else {
                            (out + firstY * ow).update(repeating: 0, count: (endY - firstY) * ow)
                            continue
                        }
                        Self.copyShiftedRows(firstY..<endY, of: phases + (phaseRow * 2 + phaseColumn) * spatial, width: ow,
                                             rowOffset: rowOffset, columnOffset: columnOffset, validColumns: lo..<hi, into: out)
                    }
                }
            }
        }
    }

    /// The geometry whose forward convolution computes this one's input gradient, when there is one:
    /// for stride 1 and one group, `dx = conv(dy, flipped filter)` with padding `(K − 1)·dilation −
    /// pad`. Its GEMM writes the `[C, H·W]` gradient directly, where im2col's adjoint writes a
    /// `[C·KH·KW, H·W]` column gradient and folds it back with `col2im` — nine times the
    /// writes for a 3×3 filter.
    var inputGradientGeometry: Conv2DGeometry? {
        let transposedPadH = (kernelHeight - 1) * dilationH - padH, transposedPadW = (kernelWidth - 1) * dilationW - padW
        guard strideH == 1, strideW == 1, groups == 1, !isPointwise, transposedPadH >= 0, transposedPadW >= 0 else { return nil }
        let transposed = Conv2DGeometry(batch: batch, inChannels: outChannels, height: outHeight, width: outWidth,
                                        outChannels: inChannels, kernelHeight: kernelHeight, kernelWidth: kernelWidth,
                                        strideH: 1, strideW: 1, padH: transposedPadH, padW: transposedPadW,
                                        dilationH: dilationH, dilationW: dilationW, groups: 1)
        return transposed.outHeight == height && transposed.outWidth == width ? transposed : nil
    }

    /// The filter of ``inputGradientGeometry``: `[C, O, KH, KW]`, spatially flipped.
    func flippedFilter(_ filter: UnsafePointer<Float>) -> Tensor {
        let (o, c, kh, kw) = (outChannels, inChannels, kernelHeight, kernelWidth)
        return Tensor(shape: [c, o, kh, kw]) { flipped in
            for oi in 0..<o {
                for ci in 0..<c {
                    let source = filter + (oi * c + ci) * kh * kw
                    let target = flipped.baseAddress! + (ci * o + oi) * kh * kw
                    for i in 0..<kh { for j in 0..<kw { target[i * kw + j] = source[(kh - 1 - i) * kw + (kw - 1 - j)] } }
                }
            }
        }
    }

    /// Writes the adjoint of im2col: the gradient of one image (`[C, H, W]`, overwritten) from its
    /// column gradient.
    func col2im(columns: UnsafePointer<Float>, inputGradient image: UnsafeMutablePointer<Float>) {
        let oh = outHeight, ow = outWidth, spatial = oh * ow
        image.update(repeating: 0, count: inChannels * height * width)
        for row in 0..<columnRows {
            let kw = row % kernelWidth
            let kh = (row / kernelWidth) % kernelHeight
            let c = row / (kernelWidth * kernelHeight)
            let plane = image + c * height * width
            let values = columns + row * spatial
            let x0 = kw * dilationW - padW
            let (lo, hi) = validOutputColumns(offset: x0)
            for y in 0..<oh {
                let iy = y * strideH - padH + kh * dilationH
                if iy < 0 || iy >= height { continue }
                let line = plane + iy * width, source = values + y * ow
                if strideW == 1 {
                    let target = line + x0
                    for x in lo..<hi { target[x] += source[x] }
                } else {
                    for x in lo..<hi { line[x * strideW + x0] += source[x] }
                }
            }
        }
    }

    /// Output columns `lo..<hi` whose input column `x·strideW + offset` lies inside the image.
    @inline(__always)
    func validOutputColumns(offset: Int) -> (Int, Int) {
        let ow = outWidth
        // x·s + offset ≥ 0  ⇔  x ≥ ⌈−offset / s⌉;  x·s + offset < W  ⇔  x ≤ ⌊(W − 1 − offset) / s⌋.
        let lo = offset >= 0 ? 0 : (-offset + strideW - 1) / strideW
        let last = width - 1 - offset
        let hi = last < 0 ? 0 : Swift.min(ow, last / strideW + 1)
        return (Swift.min(lo, ow), Swift.max(Swift.min(lo, ow), hi))
    }

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
        let result = Tensor(shape: [g.batch, g.outChannels, g.outHeight, g.outWidth]) { _ in }
        let pointwise = g.isPointwise
        let columnCount = g.columnCount
        let groupRows = g.groupColumnRows, groupOut = g.groupOutChannels
        let x = SendablePointer(storage.base), y = SendablePointer(result.storage.base)
        let biasPointer = bias.map { SendablePointer($0.storage.base) }
        KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .forward, m: groupOut, n: spatial, k: groupRows, batch: g.batch * groups))
        #if canImport(CDNNL)
        let native = !(DNNLConvolution.handles(g)
            && DNNLConvolution.forward(g, input: x.base, filter: filter.storage.base, bias: biasPointer.map { UnsafePointer($0.base) }, output: y.base))
        #else
        let native = true
        #endif
        let prepared = native ? g.preparedFilter(filter.storage.base) : nil
        let w = SendablePointer(prepared?.storage.base ?? filter.storage.base)
        defer { withExtendedLifetime((prepared, filter, bias)) {} }
        if native && !pointwise { KernelCounters.count(.im2col, flops: g.columnRows * spatial * g.batch) }
        if native { g.forEachImage { images in
            let scratch = ScratchBuffer(count: columnCount)
            for n in images {
                let out = y.base + n * g.outChannels * spatial
                if let biasPointer {
                    for o in 0..<g.outChannels { (out + o * spatial).initialize(repeating: biasPointer.base[o], count: spatial) }
                }
                g.convolve(image: x.base + n * g.inChannels * g.height * g.width, filter: w.base, scratch: scratch.base,
                           into: out, accumulate: biasPointer != nil)
            }
        } }
        var output = result
        // The input is needed only for the filter's gradient, the filter only for the input's: a frozen
        // filter keeps no activation alive.
        let savedInput = SavedWeightInput(self, weightTrains: filter.requiresGradient)
        let weights = requiresGradient ? filter.detached() : Tensor.zeros([0])
        let pass = ConvolutionBackward(geometry: g, savedInput: savedInput, weights: weights, filterShape: filter.shape)
        output.recordStreamingOperation("conv2d", inputs: bias.map { [self, filter, $0] } ?? [self, filter],
                                        streamingConsumer: { needs, _ in pass.streamingConsumer(needs: needs) }) { gradient, needs, sinks in
            pass.run(gradient: gradient, needs: needs, inputSink: sinks[0])
        }
        return output
    }
}
