import XCTest
@testable import PermafrostTensor

/// Finite-difference checks for every differentiable operation, including broadcast, strided and
/// permuted inputs.
final class OperationGradientTests: XCTestCase {
    func testBroadcastArithmetic() {
        let a = smoothInput([3, 4, 5], seed: 1)
        let shapes: [[Int]] = [[3, 4, 5], [4, 1], [1, 5], [], [3, 1, 5], [5]]
        for (i, shape) in shapes.enumerated() {
            let b = smoothInput(shape, seed: UInt64(10 + i))
            let d = positiveInput(shape, seed: UInt64(20 + i))
            assertGradientsMatchFiniteDifferences([a, b]) { $0[0] + $0[1] }
            assertGradientsMatchFiniteDifferences([a, b]) { $0[1] - $0[0] }
            assertGradientsMatchFiniteDifferences([a, b]) { $0[0] * $0[1] }
            assertGradientsMatchFiniteDifferences([a, d]) { $0[0] / $0[1] }
            assertGradientsMatchFiniteDifferences([d, a]) { $0[1] / $0[0] }
        }
        // Both operands broadcast: [3, 1] with [1, 4].
        assertGradientsMatchFiniteDifferences([smoothInput([3, 1], seed: 3), smoothInput([1, 4], seed: 4)]) { $0[0] * $0[1] - $0[1] }
        assertGradientsMatchFiniteDifferences([smoothInput([2, 3], seed: 5)]) { -($0[0] * 2 + 1) / 3 }
    }

    func testUnaryFunctions() {
        let x = smoothInput([4, 6], seed: 2)
        let p = positiveInput([4, 6], seed: 3)
        assertGradientsMatchFiniteDifferences([x]) { -$0[0] }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].exp() }
        assertGradientsMatchFiniteDifferences([p]) { $0[0].log() }
        assertGradientsMatchFiniteDifferences([p]) { $0[0].sqrt() }
        assertGradientsMatchFiniteDifferences([p]) { $0[0].rsqrt() }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].pow(2) }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].pow(3) }
        assertGradientsMatchFiniteDifferences([p]) { $0[0].pow(-1.5) }
        assertGradientsMatchFiniteDifferences([p, smoothInput([6], seed: 4)]) { $0[0].pow($0[1]) }
        assertGradientsMatchFiniteDifferences([smoothInput([4, 6], seed: 5, avoiding: [0])]) { $0[0].abs() }
        assertGradientsMatchFiniteDifferences([smoothInput([4, 6], seed: 6, avoiding: [-0.5, 0.7])]) { $0[0].clamped(min: -0.5, max: 0.7) }
    }

    func testActivations() {
        let x = smoothInput([5, 7], seed: 7, scale: 2)
        assertGradientsMatchFiniteDifferences([x]) { $0[0].tanh() }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].sigmoid() }
        assertGradientsMatchFiniteDifferences([smoothInput([5, 7], seed: 8, avoiding: [0])]) { $0[0].relu() }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].silu() }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].gelu() }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].gelu(approximation: .tanh) }
    }

    func testSoftmaxFamilies() {
        let x = smoothInput([3, 4, 5], seed: 9, scale: 2)
        for axis in [0, 1, 2, -1] {
            assertGradientsMatchFiniteDifferences([x]) { $0[0].softmax(alongAxis: axis) }
            assertGradientsMatchFiniteDifferences([x]) { $0[0].logSoftmax(alongAxis: axis) }
        }
    }

    func testReductions() {
        let x = smoothInput([3, 4, 5], seed: 11)
        // For max, distinct values ≥ 0.05 apart, so ±h never changes which element is the maximum.
        var generator = PhiloxGenerator(seed: 12)
        let ranks = (0..<60).map { ($0, generator.nextUInt32()) }.sorted { $0.1 < $1.1 }.map { Float($0.0) * 0.05 - 1.5 }
        let separated = Tensor(shape: [3, 4, 5], scalars: ranks)
        for axes in [[0], [1], [2], [0, 2], [1, 2], [0, 1, 2]] {
            for keep in [true, false] {
                assertGradientsMatchFiniteDifferences([x]) { $0[0].sum(alongAxes: axes, keepingDimensions: keep) }
                assertGradientsMatchFiniteDifferences([x]) { $0[0].mean(alongAxes: axes, keepingDimensions: keep) }
                assertGradientsMatchFiniteDifferences([separated]) { $0[0].max(alongAxes: axes, keepingDimensions: keep) }
                assertGradientsMatchFiniteDifferences([x]) { $0[0].variance(alongAxes: axes, keepingDimensions: keep) }
                assertGradientsMatchFiniteDifferences([x]) { $0[0].variance(alongAxes: axes, keepingDimensions: keep, unbiased: true) }
            }
        }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].sum() }
        // A reduction of a permuted (non-contiguous in the original order) tensor.
        assertGradientsMatchFiniteDifferences([separated]) { $0[0].permuted([2, 0, 1]).max(alongAxes: [1]) }
    }

    func testMatrixProducts() {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = smoothInput(ta ? [5, 3] : [3, 5], seed: 12)
            let b = smoothInput(tb ? [4, 5] : [5, 4], seed: 13)
            assertGradientsMatchFiniteDifferences([a, b]) { $0[0].matmul($0[1], transposeSelf: ta, transposeOther: tb) }
            let batchedA = smoothInput(ta ? [2, 5, 3] : [2, 3, 5], seed: 14)
            let batchedB = smoothInput(tb ? [2, 4, 5] : [2, 5, 4], seed: 15)
            assertGradientsMatchFiniteDifferences([batchedA, batchedB]) { $0[0].matmul($0[1], transposeSelf: ta, transposeOther: tb) }
            // Broadcast batch: a 2-D weight shared by every batch, on either side.
            assertGradientsMatchFiniteDifferences([batchedA, b]) { $0[0].matmul($0[1], transposeSelf: ta, transposeOther: tb) }
            assertGradientsMatchFiniteDifferences([a, batchedB]) { $0[0].matmul($0[1], transposeSelf: ta, transposeOther: tb) }
        }
        // Batch axes that broadcast against each other, and a permuted operand.
        assertGradientsMatchFiniteDifferences([smoothInput([2, 1, 3, 4], seed: 16), smoothInput([1, 3, 4, 2], seed: 17)]) { $0[0].matmul($0[1]) }
        assertGradientsMatchFiniteDifferences([smoothInput([4, 2, 3], seed: 18), smoothInput([2, 4, 5], seed: 19)]) { $0[0].permuted([1, 0, 2]).matmul($0[1], transposeSelf: true) }
    }

    func testLinearWithBiasInTheGEMM() {
        assertGradientsMatchFiniteDifferences([smoothInput([2, 3, 5], seed: 24), smoothInput([4, 5], seed: 25), smoothInput([4], seed: 26)]) {
            $0[0].linear(weight: $0[1], bias: $0[2])
        }
        let x = smoothInput([3, 5], seed: 27), w = smoothInput([4, 5], seed: 28), b = smoothInput([4], seed: 29)
        let fused = x.linear(weight: w, bias: b).scalars, composed = (x.matmul(w, transposeOther: true) + b).scalars
        for (a, c) in zip(fused, composed) { XCTAssertEqual(a, c, accuracy: 1e-5) }
    }

    /// Convolution values against the definition (a direct sum per output), for the im2col layouts
    /// that have their own code: generic strided, stride-2 phase planes, row-shifted, pointwise.
    func testConvolutionValuesMatchTheDefinition() {
        struct Case { var input: [Int]; var filter: [Int]; var stride: (Int, Int); var padding: (Int, Int) }
        let cases = [
            Case(input: [2, 3, 8, 6], filter: [4, 3, 3, 3], stride: (2, 2), padding: (1, 1)),
            Case(input: [1, 2, 6, 8], filter: [3, 2, 4, 4], stride: (2, 2), padding: (1, 1)),
            Case(input: [1, 2, 7, 7], filter: [3, 2, 3, 3], stride: (2, 2), padding: (1, 1)),
            Case(input: [1, 2, 7, 6], filter: [2, 2, 3, 2], stride: (2, 3), padding: (1, 0)),
            Case(input: [1, 6, 5, 5], filter: [2, 6, 3, 3], stride: (1, 1), padding: (1, 1)),
            Case(input: [2, 3, 4, 4], filter: [2, 3, 1, 1], stride: (1, 1), padding: (0, 0)),
        ]
        for (index, c) in cases.enumerated() {
            let x = smoothInput(c.input, seed: UInt64(70 + index)), w = smoothInput(c.filter, seed: UInt64(80 + index))
            let y = x.conv2d(filter: w, stride: c.stride, padding: c.padding)
            let (n, ch, h, wd) = (c.input[0], c.input[1], c.input[2], c.input[3])
            let (o, kh, kw) = (c.filter[0], c.filter[2], c.filter[3])
            let (oh, ow) = (y.shape[2], y.shape[3])
            XCTAssertEqual(oh, (h + 2 * c.padding.0 - kh) / c.stride.0 + 1)
            XCTAssertEqual(ow, (wd + 2 * c.padding.1 - kw) / c.stride.1 + 1)
            let (xs, ws, ys) = (x.scalars, w.scalars, y.scalars)
            var worst: Double = 0
            for b in 0..<n { for oc in 0..<o { for oy in 0..<oh { for ox in 0..<ow {
                var sum = 0.0
                for ic in 0..<ch { for i in 0..<kh { for j in 0..<kw {
                    let iy = oy * c.stride.0 + i - c.padding.0, ix = ox * c.stride.1 + j - c.padding.1
                    guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                    sum += Double(xs[((b * ch + ic) * h + iy) * wd + ix]) * Double(ws[((oc * ch + ic) * kh + i) * kw + j])
                } } }
                worst = max(worst, abs(sum - Double(ys[((b * o + oc) * oh + oy) * ow + ox])))
            } } } }
            XCTAssertLessThan(worst, 1e-4, "case \(index): \(c.input) * \(c.filter), stride \(c.stride), padding \(c.padding)")
        }
    }

    func testConvolution() {
        struct Case { var input: [Int]; var filter: [Int]; var stride = (1, 1); var padding = (0, 0); var dilation = (1, 1); var groups = 1; var bias = true }
        let cases = [
            Case(input: [2, 3, 6, 5], filter: [4, 3, 3, 3], padding: (1, 1)),
            Case(input: [1, 2, 7, 7], filter: [3, 2, 3, 2], stride: (2, 3), padding: (1, 0), bias: false),
            Case(input: [2, 2, 7, 6], filter: [2, 2, 3, 3], padding: (2, 1), dilation: (2, 1)),
            Case(input: [2, 4, 5, 5], filter: [6, 2, 3, 3], padding: (1, 1), groups: 2),
            Case(input: [1, 4, 4, 4], filter: [4, 1, 3, 3], stride: (2, 2), padding: (1, 1), groups: 4),
            Case(input: [3, 4, 3, 3], filter: [2, 4, 1, 1]),
            // Stride 1 computes the input gradient as a convolution with the flipped filter: unpadded and
            // non-square kernels give it unequal paddings.
            Case(input: [2, 3, 6, 5], filter: [2, 3, 3, 2], padding: (0, 1)),
            // Row-shifted columns (stride 1, output as wide as the input, ≥ 16 channel × kernel
            // columns): unpadded rows (with enough output channels that the flipped-filter input
            // gradient is row-shifted too), dilated rows, and padding beyond the kernel (no
            // flipped-filter input gradient; col2im instead).
            Case(input: [2, 6, 6, 5], filter: [6, 6, 3, 3], padding: (0, 1)),
            Case(input: [1, 8, 7, 5], filter: [3, 8, 2, 3], padding: (1, 1), dilation: (3, 1)),
            Case(input: [1, 16, 4, 4], filter: [2, 16, 1, 3], padding: (2, 1), bias: false),
            // Stride 2 halving an even input: columns from the four phase planes (3×3 pad 1 as in
            // downsampling, 4×4 pad 1 with a tap one phase row ahead, 2×2 unpadded).
            Case(input: [2, 3, 8, 6], filter: [4, 3, 3, 3], stride: (2, 2), padding: (1, 1)),
            Case(input: [1, 2, 6, 8], filter: [3, 2, 4, 4], stride: (2, 2), padding: (1, 1)),
            Case(input: [2, 2, 4, 6], filter: [2, 2, 2, 2], stride: (2, 2), bias: false),
        ]
        for (i, c) in cases.enumerated() {
            var inputs = [smoothInput(c.input, seed: UInt64(30 + i)), smoothInput(c.filter, seed: UInt64(40 + i), scale: 0.5)]
            if c.bias { inputs.append(smoothInput([c.filter[0]], seed: UInt64(50 + i))) }
            assertGradientsMatchFiniteDifferences(inputs) { p in
                p[0].conv2d(filter: p[1], bias: c.bias ? p[2] : nil, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
            }
        }
    }

    func testPoolingAndUpsampling() {
        let x = smoothInput([2, 3, 6, 4], seed: 60)
        assertGradientsMatchFiniteDifferences([x]) { $0[0].upsampledNearest2x() }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].averagePooled(kernel: (2, 2)) }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].averagePooled(kernel: (3, 2), stride: (1, 1)) }
    }

    func testShapeOperations() {
        let a = smoothInput([2, 3, 4], seed: 70), b = smoothInput([2, 2, 4], seed: 71)
        assertGradientsMatchFiniteDifferences([a, b]) { Tensor.concatenate([$0[0], $0[1], $0[0]], alongAxis: 1) }
        assertGradientsMatchFiniteDifferences([a]) { p in
            let parts = p[0].split(sizes: [1, 3], alongAxis: 2)
            return parts[0] * parts[1]
        }
        assertGradientsMatchFiniteDifferences([a]) { $0[0].slice(alongAxis: 2, from: 1, to: 4, step: 2) }
        assertGradientsMatchFiniteDifferences([a]) { $0[0].slice(alongAxis: 0, from: -1) }
        assertGradientsMatchFiniteDifferences([a, a * 2]) { Tensor.stack([$0[0], $0[1]], alongAxis: 1) }
        assertGradientsMatchFiniteDifferences([a]) { $0[0].permuted([2, 0, 1]) }
        assertGradientsMatchFiniteDifferences([a]) { $0[0].permuted([1, 2, 0]).reshaped([3, 8]).transposed() }
        assertGradientsMatchFiniteDifferences([a]) { $0[0].reshaped([6, 4]).expandingShape(at: 0).squeezed() }
    }

    func testEmbeddingGatherScatter() {
        let table = smoothInput([6, 4], seed: 80)
        // Repeated indices must accumulate.
        assertGradientsMatchFiniteDifferences([table]) { $0[0].gatheringRows([1, 3, 1, 5, 0, 1], indexShape: [2, 3]) }
    }

    func testNormalization() {
        let x = smoothInput([2, 6, 3, 3], seed: 90)
        let gamma = smoothInput([6], seed: 91), beta = smoothInput([6], seed: 92)
        assertGradientsMatchFiniteDifferences([x, gamma, beta]) { $0[0].groupNormalized(groups: 3, scale: $0[1], shift: $0[2]) }
        assertGradientsMatchFiniteDifferences([x]) { $0[0].groupNormalized(groups: 2) }
        let y = smoothInput([3, 4, 5], seed: 93)
        assertGradientsMatchFiniteDifferences([y, smoothInput([5], seed: 94), smoothInput([5], seed: 95)]) {
            $0[0].layerNormalized(scale: $0[1], shift: $0[2])
        }
        assertGradientsMatchFiniteDifferences([y, smoothInput([4, 5], seed: 96)]) { $0[0].layerNormalized(normalizedAxes: 2, scale: $0[1]) }
    }

    func testDropoutUsesOneMaskPerSeed() {
        let x = smoothInput([8, 8], seed: 100)
        assertGradientsMatchFiniteDifferences([x]) { p in
            var generator = PhiloxGenerator(seed: 5)
            return p[0].dropout(probability: 0.3, generator: &generator)
        }
    }

    func testAttention() {
        let q = smoothInput([2, 3, 4], seed: 110), k = smoothInput([2, 5, 4], seed: 111), v = smoothInput([2, 5, 3], seed: 112)
        assertGradientsMatchFiniteDifferences([q, k, v]) { scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2]) }
        let additive = smoothInput([3, 5], seed: 113)
        assertGradientsMatchFiniteDifferences([q, k, v]) { scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], mask: .additive(additive)) }
        let keep = Tensor(shape: [1, 3, 5], scalars: (0..<15).map { $0 % 4 == 3 ? 0 : 1 })
        assertGradientsMatchFiniteDifferences([q, k, v]) { scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], mask: .keep(keep)) }
        let square = smoothInput([2, 4, 4], seed: 114)
        assertGradientsMatchFiniteDifferences([square, smoothInput([2, 4, 4], seed: 115), smoothInput([2, 4, 3], seed: 116)]) {
            scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], mask: .causal, scale: 0.7)
        }
    }

    /// Packed multi-head self-attention (heads read in place from a `[B, S, 3E]` projection): finite
    /// differences, with and without a mask broadcast over heads.
    func testPackedMultiHeadSelfAttention() {
        let packed = smoothInput([2, 4, 3 * 6], seed: 130)
        assertGradientsMatchFiniteDifferences([packed]) { multiHeadSelfAttention(packed: $0[0], heads: 3) }
        let padding = Tensor(shape: [2, 1, 1, 4], scalars: [0, 0, 0, -.infinity, 0, 0, -.infinity, -.infinity])
        assertGradientsMatchFiniteDifferences([packed]) { multiHeadSelfAttention(packed: $0[0], heads: 2, mask: .additive(padding), scale: 0.4) }
    }

    /// The packed kernel computes what the split-and-permute composition computes, values and
    /// gradients, whether it keeps its probabilities or recomputes them (activation compression).
    func testPackedMultiHeadSelfAttentionMatchesSplitHeads() {
        let (b, s, e, heads) = (2, 5, 8, 4)
        let packed = smoothInput([b, s, 3 * e], seed: 131)
        let mask = Tensor(shape: [b, 1, 1, s], scalars: (0..<(b * s)).map { $0 == 4 || $0 == 8 ? -.infinity : 0 })
        let seed = smoothInput([b, s, e], seed: 132)
        func split(_ x: Tensor) -> Tensor {
            let parts = x.split(sizes: [e, e, e], alongAxis: 2).map { $0.reshaped([b, s, heads, e / heads]).permuted([0, 2, 1, 3]) }
            let attended = scaledDotProductAttention(query: parts[0], key: parts[1], value: parts[2], mask: .additive(mask))
            return attended.permuted([0, 2, 1, 3]).reshaped([b, s, e])
        }
        for mode in [ActivationCompression.none, .int8] {
            let (expected, expectedGradient) = ActivationCompression.with(mode) {
                valueAndGradient(at: [packed.requiringGradient()]) { p in (split(p[0]) * seed).sum() }
            }
            let (actual, actualGradient) = ActivationCompression.with(mode) {
                valueAndGradient(at: [packed.requiringGradient()]) { p in (multiHeadSelfAttention(packed: p[0], heads: heads, mask: .additive(mask)) * seed).sum() }
            }
            XCTAssertEqual(actual.scalar, expected.scalar, accuracy: 1e-5, "\(mode)")
            let difference = zip(actualGradient[0]!.scalars, expectedGradient[0]!.scalars).map { Swift.abs($0 - $1) }.max() ?? .nan
            XCTAssertLessThan(difference, 1e-5, "\(mode): packed and split-head gradients differ by \(difference)")
        }
    }

    func testLosses() {
        let prediction = smoothInput([4, 3], seed: 120), target = smoothInput([4, 3], seed: 121)
        assertGradientsMatchFiniteDifferences([prediction, target]) { meanSquaredError($0[0], $0[1]) }
        assertGradientsMatchFiniteDifferences([smoothInput([5, 4], seed: 122, scale: 2)]) { crossEntropy(logits: $0[0], labels: [0, 3, 1, 1, 2]) }
    }
}
