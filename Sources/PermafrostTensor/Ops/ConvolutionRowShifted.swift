/// Row-shifted columns: a cheaper im2col for stride-1 convolutions whose output is as wide as their
/// input (the 3×3, padding-1 convolutions that make up most of a UNet, and their input gradients).
///
/// im2col writes every input element `KH·KW` times. Here only the `KW` horizontal shifts are
/// materialised, over every padded input row: `columns[(c, kw), r·W + x] = image[c, r − padH,
/// x + kw·dilationW − padW]` (zero outside the image), `C·KW` rows of `(Ho + (KH − 1)·dilationH)·W`.
/// Kernel row `kh` then reads the same matrix `kh·dilationH` image rows further on, so the
/// convolution is `KH` GEMMs with `K = C·KW` over one shared buffer, accumulated into the output:
/// ≈ 3× fewer bytes written than im2col for a 3×3 filter, and a column matrix that stays in L2.
extension Conv2DGeometry {
    /// Stride 1, one group, an output row as wide as an input row, not a plain 1×1 product, and at
    /// least 16 input channel × kernel column pairs: each of the `KH` GEMMs has `K = C·KW`, and for
    /// a first layer reading one image channel (K = 3) the output would be read and written three
    /// times for a few multiply-adds per element, while im2col's matrix is only 9 rows there.
    var usesRowShiftedColumns: Bool {
        strideH == 1 && strideW == 1 && groups == 1 && outWidth == width && !isPointwise && inChannels * kernelWidth >= 16
    }

    /// Padded input rows the shifted columns cover.
    var shiftedRows: Int { outHeight + (kernelHeight - 1) * dilationH }

    /// Floats in one image's row-shifted column matrix.
    var shiftedColumnCount: Int { inChannels * kernelWidth * shiftedRows * width }

    /// Fills the row-shifted columns (`[C·KW, shiftedRows·W]`) of one image (`[C, H, W]`).
    func rowShiftedColumns(image: UnsafePointer<Float>, columns: UnsafeMutablePointer<Float>) {
        let w = width, rows = shiftedRows, run = rows * w
        // Padded row r holds input row r − padH.
        let firstRow = Swift.min(rows, padH), endRow = Swift.max(firstRow, Swift.min(rows, height + padH))
        for kw in 0..<kernelWidth {
            let x0 = kw * dilationW - padW
            let (lo, hi) = validOutputColumns(offset: x0)
            for c in 0..<inChannels {
                let out = columns + (c * kernelWidth + kw) * run
                let plane = image + c * height * w
                out.update(repeating: 0, count: firstRow * w)
                (out + endRow * w).update(repeating: 0, count: run - endRow * w)
                guard endRow > firstRow, hi > lo else {
                    (out + firstRow * w).update(repeating: 0, count: (endRow - firstRow) * w)
                    continue
                }
                copyShiftedRows(firstRow..<endRow, of: plane, rowOffset: -padH, columnOffset: x0, validColumns: lo..<hi, into: out)
            }
        }
    }

    /// Rows `rows` of a column block whose rows are as wide as the input's (`width`): row `r` is input
    /// row `r + rowOffset` shifted by `columnOffset`, zero outside `validColumns` (non-empty). One copy
    /// for the whole run — output and input rows line up — then the border columns that wrapped in
    /// from neighbouring rows are cleared: per-row copies of a 28-pixel line cost more in call
    /// overhead than in bytes.
    @inline(__always)
    func copyShiftedRows(_ rows: Range<Int>, of plane: UnsafePointer<Float>, rowOffset: Int, columnOffset: Int,
                         validColumns: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        Self.copyShiftedRows(rows, of: plane, width: width, rowOffset: rowOffset, columnOffset: columnOffset, validColumns: validColumns, into: out)
    }

    /// ``copyShiftedRows(_:of:rowOffset:columnOffset:validColumns:into:)`` for any plane whose rows
    /// are `width` wide, as the column block's are (a stride-2 phase plane, say).
    @inline(__always)
    static func copyShiftedRows(_ rows: Range<Int>, of plane: UnsafePointer<Float>, width w: Int, rowOffset: Int, columnOffset: Int,
                                validColumns: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let (lo, hi) = (validColumns.lowerBound, validColumns.upperBound)
        let start = rows.lowerBound * w + lo, end = (rows.upperBound - 1) * w + hi
        (out + start).update(from: plane + (rows.lowerBound + rowOffset) * w + lo + columnOffset, count: end - start)
        guard lo > 0 || hi < w else { return }
        for r in rows {
            let line = out + r * w
            for x in 0..<lo { line[x] = 0 }
            for x in hi..<w { line[x] = 0 }
        }
    }

    /// The filter (`[O, C, KH, KW]`) regrouped by kernel row: `[KH, O, C·KW]`.
    func filterByKernelRow(_ filter: UnsafePointer<Float>) -> Tensor {
        let (o, c, kh, kw) = (outChannels, inChannels, kernelHeight, kernelWidth)
        return Tensor(shape: [kh, o, c * kw]) { rows in
            let base = rows.baseAddress!
            for i in 0..<kh {
                for oi in 0..<o {
                    for ci in 0..<c {
                        for j in 0..<kw { base[(i * o + oi) * c * kw + ci * kw + j] = filter[((oi * c + ci) * kh + i) * kw + j] }
                    }
                }
            }
        }
    }

    /// The filter as ``convolve(image:filter:scratch:into:accumulate:)`` reads it: regrouped by kernel
    /// row for row-shifted columns, nil when the `[O, C/groups, KH, KW]` layout serves as it is.
    func preparedFilter(_ filter: UnsafePointer<Float>) -> Tensor? {
        usesRowShiftedColumns ? filterByKernelRow(filter) : nil
    }

    /// `out (+)= filter ∗ image` for one image (`filter` as ``preparedFilter(_:)`` left it), with
    /// `scratch` holding ``columnCount`` floats: row-shifted columns and `KH` GEMMs, im2col and one
    /// GEMM per group, or a 1×1 product straight from the image.
    func convolve(image: UnsafePointer<Float>, filter: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                  into out: UnsafeMutablePointer<Float>, accumulate: Bool) {
        if usesRowShiftedColumns {
            rowShiftedColumns(image: image, columns: scratch)
            multiplyRowShifted(filterRows: filter, columns: scratch, into: out, accumulate: accumulate)
            return
        }
        let spatial = outHeight * outWidth, groupRows = groupColumnRows, groupOut = groupOutChannels
        if !isPointwise { im2col(image: image, columns: scratch) }
        let columns = isPointwise ? image : UnsafePointer(scratch)
        for group in 0..<groups {
            BLAS.sgemm(transposeA: false, transposeB: false, m: groupOut, n: spatial, k: groupRows,
                       a: filter + group * groupOut * groupRows, b: columns + group * groupRows * spatial,
                       beta: accumulate ? 1 : 0, c: out + group * groupOut * spatial)
        }
    }

    /// Floats of scratch one image's ``convolve(image:filter:scratch:into:accumulate:)`` needs.
    var columnCount: Int {
        usesRowShiftedColumns ? shiftedColumnCount : (isPointwise ? 0 : columnRows * outHeight * outWidth)
    }

    /// `out (+)= filter ∗ image` for one image from its row-shifted columns: `KH` GEMMs.
    func multiplyRowShifted(filterRows: UnsafePointer<Float>, columns: UnsafePointer<Float>,
                            into out: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let n = outHeight * width, k = inChannels * kernelWidth
        for kh in 0..<kernelHeight {
            BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: n, k: k,
                       a: filterRows + kh * outChannels * k, b: columns + kh * dilationH * width, ldb: shiftedRows * width,
                       beta: accumulate || kh > 0 ? 1 : 0, c: out)
        }
    }

    /// `rows (+)= dOut · columnsᵀ` per kernel row: one image's filter gradient in `[KH, O, C·KW]` layout.
    func accumulateRowShiftedFilterGradient(outputGradient dOut: UnsafePointer<Float>, columns: UnsafePointer<Float>,
                                            into rows: UnsafeMutablePointer<Float>) {
        let n = outHeight * width, k = inChannels * kernelWidth
        for kh in 0..<kernelHeight {
            BLAS.sgemm(transposeA: false, transposeB: true, m: outChannels, n: k, k: n,
                       a: dOut, b: columns + kh * dilationH * width, ldb: shiftedRows * width,
                       beta: 1, c: rows + kh * outChannels * k)
        }
    }

    /// Adds a `[KH, O, C·KW]` filter gradient into the `[O, C, KH, KW]` one.
    func addKernelRowGradient(_ rows: UnsafePointer<Float>, into filter: UnsafeMutablePointer<Float>) {
        let (o, c, kh, kw) = (outChannels, inChannels, kernelHeight, kernelWidth)
        for i in 0..<kh {
            for oi in 0..<o {
                for ci in 0..<c {
                    for j in 0..<kw { filter[((oi * c + ci) * kh + i) * kw + j] += rows[(i * o + oi) * c * kw + ci * kw + j] }
                }
            }
        }
    }
}
