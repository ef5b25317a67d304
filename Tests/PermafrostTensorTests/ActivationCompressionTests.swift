import XCTest
@testable import PermafrostTensor

/// int8 storage of activation functions' saved tensors: the error it puts into gradients, and the
/// memory it saves, measured.
final class ActivationCompressionTests: XCTestCase {
    func network(_ x: Tensor, _ w1: Tensor, _ w2: Tensor, _ w3: Tensor) -> Tensor {
        let h1 = x.matmul(w1).silu()
        let h2 = h1.matmul(w2).gelu()
        let h3 = h2.matmul(w3).relu().tanh()
        return (h3 * h3).mean()
    }

    /// Gradients for trainable copies of `weights` under `mode`, and the bytes the forward pass kept.
    func gradientsAndKeptBytes(_ mode: ActivationCompression, weights: [Tensor], _ loss: ([Tensor]) -> Tensor) -> ([Tensor?], Int) {
        let leaves = weights.map { $0.requiringGradient() }
        let before = MemoryStatistics.liveBytes
        var kept = 0
        let gradients: [Tensor?] = ActivationCompression.with(mode) {
            let value = loss(leaves)
            kept = MemoryStatistics.liveBytes - before
            return value.gradients(withRespectTo: leaves)
        }
        return (gradients, kept)
    }

    /// ‖b − a‖ / ‖a‖.
    func relativeError(_ a: Tensor?, _ b: Tensor?) throws -> Double {
        let a = try XCTUnwrap(a).scalars, b = try XCTUnwrap(b).scalars
        return zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }.squareRoot() / a.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
    }

    /// A 64×128 input and the three weights of ``network(_:_:_:_:)``.
    func mlpCase(seed: UInt64) -> (x: Tensor, weights: [Tensor]) {
        var g = PhiloxGenerator(seed: seed)
        let x = Tensor(randomNormal: [64, 128], generator: &g)
        let w1 = Tensor(randomNormal: [128, 256], generator: &g) * 0.09
        let w2 = Tensor(randomNormal: [256, 256], generator: &g) * 0.06
        let w3 = Tensor(randomNormal: [256, 64], generator: &g) * 0.06
        return (x, [w1, w2, w3])
    }

    func testInt8ActivationsGiveGradientsWithinOnePercentAndSaveMemory() throws {
        let (x, weights) = mlpCase(seed: 21)
        let loss = { (w: [Tensor]) in self.network(x, w[0], w[1], w[2]) }
        let (exact, fullBytes) = gradientsAndKeptBytes(.none, weights: weights, loss)
        let (compressed, int8Bytes) = gradientsAndKeptBytes(.int8, weights: weights, loss)
        for index in 0..<3 {
            let relative = try relativeError(exact[index], compressed[index])
            print(String(format: "int8 activations: relative gradient error of w%d = %.4f%%", index + 1, relative * 100))
            XCTAssertLessThan(relative, 0.01, "w\(index + 1)")
            if index < 2 { XCTAssertGreaterThan(relative, 0, "w\(index + 1)'s gradient passes through compressed activations") }
        }
        // The SiLU and GELU inputs (64×(256+256) floats) shrink from 4 bytes to 1 (ReLU keeps its bit
        // mask in both modes); tanh's output stays alive anyway (the loss squares it), so its int8
        // copy costs 64×64 extra bytes.
        print("activation memory kept by the forward pass: \(fullBytes) B full, \(int8Bytes) B int8")
        XCTAssertEqual(fullBytes - int8Bytes, 64 * (256 + 256) * 3 - 64 * 64, accuracy: 64)
    }

    /// `.int8WithWeightInputs` also stores the inputs matmuls keep for their weight gradients in
    /// 8 bits: the weight gradients' rounding error, and the bytes saved, measured.
    func testInt8WeightInputsKeepGradientsWithinTwoPercent() throws {
        let (x, weights) = mlpCase(seed: 22)
        let loss = { (w: [Tensor]) in self.network(x, w[0], w[1], w[2]) }
        let (exact, _) = gradientsAndKeptBytes(.none, weights: weights, loss)
        let (staticOnly, staticBytes) = gradientsAndKeptBytes(.int8, weights: weights, loss)
        let (all, allBytes) = gradientsAndKeptBytes(.int8WithWeightInputs, weights: weights, loss)
        for index in 0..<3 {
            let relative = try relativeError(exact[index], all[index]), staticRelative = try relativeError(exact[index], staticOnly[index])
            print(String(format: "int8 weight inputs: relative gradient error of w%d = %.4f%% (static only: %.4f%%)", index + 1, relative * 100, staticRelative * 100))
            XCTAssertLessThan(relative, 0.02, "w\(index + 1)")
            XCTAssertGreaterThan(relative, staticRelative * 0.5, "w\(index + 1): its own input is rounded now")
        }
        // The two hidden activations the next matmuls keep (64×256 each) shrink from 4 bytes to 1;
        // x stays alive in the caller, so its 8-bit copy (64×128 bytes) is extra.
        XCTAssertEqual(staticBytes - allBytes, 64 * 256 * 2 * 3 - 64 * 128, accuracy: 64)
    }

    /// The same for convolutions: a trainable filter's saved input kept in 8 bits.
    func testInt8WeightInputsOfConvolutions() throws {
        var g = PhiloxGenerator(seed: 23)
        let x = Tensor(randomNormal: [4, 8, 10, 10], generator: &g)
        let w1 = Tensor(randomNormal: [16, 8, 3, 3], generator: &g) * 0.1
        let w2 = Tensor(randomNormal: [4, 16, 3, 3], generator: &g) * 0.08
        let loss = { (w: [Tensor]) in
            x.conv2d(filter: w[0], padding: (1, 1)).silu().conv2d(filter: w[1], padding: (1, 1)).squared().mean()
        }
        let (exact, exactBytes) = gradientsAndKeptBytes(.none, weights: [w1, w2], loss)
        let (all, allBytes) = gradientsAndKeptBytes(.int8WithWeightInputs, weights: [w1, w2], loss)
        for index in 0..<2 {
            let relative = try relativeError(exact[index], all[index])
            print(String(format: "int8 convolution inputs: relative gradient error of w%d = %.4f%%", index + 1, relative * 100))
            XCTAssertLessThan(relative, 0.02)
            XCTAssertGreaterThan(relative, 0)
        }
        // silu's input and the second convolution's input (4×16×10×10 each) go from 4 bytes to 1;
        // x's 8-bit copy (4×8×10×10) is extra.
        XCTAssertEqual(exactBytes - allBytes, 4 * 16 * 100 * 2 * 3 - 4 * 8 * 100, accuracy: 64)
    }

    /// Under compression attention keeps no probability matrix: backward recomputes it from q and k,
    /// so the gradients are bit-for-bit the same and the forward pass keeps `B·H·L·S` floats less.
    func testCompressionRecomputesAttentionProbabilitiesExactly() throws {
        var g = PhiloxGenerator(seed: 29)
        let q = Tensor(randomNormal: [2, 3, 20, 8], generator: &g), k = Tensor(randomNormal: [2, 3, 20, 8], generator: &g)
        let v = Tensor(randomNormal: [2, 3, 20, 6], generator: &g)
        for mask in [nil, AttentionMask.causal] {
            let loss = { (w: [Tensor]) in scaledDotProductAttention(query: w[0], key: w[1], value: w[2], mask: mask).squared().mean() }
            let (exact, exactBytes) = gradientsAndKeptBytes(.none, weights: [q, k, v], loss)
            let (recomputed, recomputedBytes) = gradientsAndKeptBytes(.int8, weights: [q, k, v], loss)
            for index in 0..<3 {
                XCTAssertEqual(try XCTUnwrap(exact[index]).scalars, try XCTUnwrap(recomputed[index]).scalars)
            }
            XCTAssertEqual(exactBytes - recomputedBytes, 2 * 3 * 20 * 20 * 4, accuracy: 64)
        }
    }

    /// ReLU keeps one bit per element: its gradient is exactly `g · [x > 0]` (sizes that are not a
    /// multiple of 32, zeros, negative zero and NaN included) and it holds 1/32 of its input's bytes.
    func testReLUKeepsAnExactBitMask() throws {
        var g = PhiloxGenerator(seed: 9)
        for count in [1, 31, 32, 33, 1000, 70_001] {
            var values = Tensor(randomNormal: [count], generator: &g).scalars
            if count > 4 { values[0] = 0; values[1] = -0.0; values[2] = .nan; values[3] = .leastNonzeroMagnitude }
            let x = Tensor(shape: [count], scalars: values).requiringGradient()
            let upstream = Tensor(randomNormal: [count], generator: &g)
            let before = MemoryStatistics.liveBytes
            let y = x.relu()
            let kept = MemoryStatistics.liveBytes - before - count * 4  // minus the output itself
            let gradient = try XCTUnwrap((y * upstream).sum().gradients(withRespectTo: [x])[0]).scalars
            let expected = zip(values, upstream.scalars).map { $0 > 0 ? $1 : 0 }
            XCTAssertEqual(gradient, expected, "count \(count)")
            XCTAssertEqual(kept, (count + 31) / 32 * 4, "count \(count): one bit per element")
            XCTAssertEqual(y.scalars, values.map { $0 > 0 ? $0 : 0 }, "count \(count)")
        }
    }

    func testQuantisationRoundTripIsWithinHalfAStep() {
        var g = PhiloxGenerator(seed: 2)
        let x = Tensor(randomNormal: [1000], generator: &g) * 3
        let copy = Int8Copy(x)
        let restored = copy.restored().scalars
        let maximum = x.scalars.map { Swift.abs($0) }.max()!
        XCTAssertEqual(copy.scale, maximum / 127, accuracy: 1e-6)
        for (a, b) in zip(x.scalars, restored) { XCTAssertLessThanOrEqual(Swift.abs(a - b), copy.scale / 2 + 1e-6) }
        XCTAssertEqual(Int8Copy(Tensor.zeros([5])).restored().scalars, [0, 0, 0, 0, 0], "all-zero tensors stay exact")
    }

    func testVectorisedQuantisationEqualsTheScalarDefinition() {
        // 16-lane passes plus a scalar tail (1003 elements); NaN, ±∞, ±0 and exact halves included.
        var g = PhiloxGenerator(seed: 8)
        let cases: [[Float]] = [[], [.nan, .infinity, -.infinity, -0.0, 0.0]]
        for specials in cases {
            var values = Tensor(randomNormal: [1003], generator: &g).scalars.map { $0 * 3 }
            for (offset, special) in specials.enumerated() { values[17 + offset * 101] = special }
            values[40] = 127.5 * (values.map { Swift.abs($0) }.filter(\.isFinite).max()! / 127)
            let copy = Int8Copy(Tensor(shape: [1003], scalars: values))
            let largest = values.reduce(Float(0)) { Swift.max($0, Swift.abs($1)) }
            XCTAssertEqual(copy.scale, largest > 0 && largest.isFinite ? largest / 127 : 1)
            let bytes = UnsafeRawPointer(copy.packed.storage.base).assumingMemoryBound(to: Int8.self)
            for (i, x) in values.enumerated() {
                let q = x * (1 / copy.scale)
                let expected: Int8 = q.isNaN ? 0 : Int8(Swift.min(127, Swift.max(-127, q + (q < 0 ? -0.5 : 0.5))))
                XCTAssertEqual(bytes[i], expected, "element \(i) = \(x)")
            }
        }
    }

    /// The vector quantiser against the scalar definition where rounding is hardest: every value
    /// one or two ulps either side of each half-integer and integer in [-130, 130] (where adding
    /// ±0.5 in Float32 itself rounds, e.g. -0.49999997 − 0.5 = -1), at two scales.
    func testVectorQuantiserMatchesTheScalarOneAtRoundingBoundaries() {
        var values: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude]
        for k in -260...260 {
            let centre = Float(k) / 2
            var below = centre, above = centre
            values.append(centre)
            for _ in 0..<2 { below = below.nextDown; above = above.nextUp; values += [below, above] }
        }
        while values.count % 16 != 0 { values.append(0.25) }
        for inverse: Float in [1, 127 / 3.1] {
            for start in stride(from: 0, to: values.count, by: 16) {
                let lanes = SIMD16<Float>(values[start..<start + 16].map { $0 / (inverse == 1 ? 1 : inverse) })
                let vector = Int8Copy.quantised(lanes, inverse: inverse)
                for lane in 0..<16 {
                    XCTAssertEqual(vector[lane], Int8Copy.quantised(lanes[lane], inverse: inverse), "x = \(lanes[lane]), inverse \(inverse)")
                }
            }
        }
    }

    /// A group norm with a frozen scale keeps its input in 8 bits (whether or not its shift trains:
    /// the shift's gradient reads none of the input); one with a trainable scale keeps Float32.
    func testFrozenGroupNormKeepsItsInputInEightBits() throws {
        var g = PhiloxGenerator(seed: 5)
        let x = Tensor(randomNormal: [64, 128], generator: &g)
        let w1 = Tensor(randomNormal: [128, 256], generator: &g) * 0.09
        let w2 = Tensor(randomNormal: [256, 32], generator: &g) * 0.06
        let gamma = Tensor(randomNormal: [16], generator: &g) * 0.1 + 1, beta = Tensor(randomNormal: [16], generator: &g) * 0.1
        func run(_ mode: ActivationCompression, trainableNorm: Bool, trainableShift: Bool = false) -> ([Tensor?], Int) {
            let leaves = [w1, w2].map { $0.requiringGradient() }
            let scale = trainableNorm ? gamma.requiringGradient() : gamma
            let shift = trainableShift ? beta.requiringGradient() : beta
            let before = MemoryStatistics.liveBytes
            var kept = 0
            let gradients: [Tensor?] = ActivationCompression.with(mode) {
                let h = x.matmul(leaves[0]).reshaped([64, 16, 16]).groupNormalized(groups: 4, scale: scale, shift: shift)
                let loss = h.reshaped([64, 256]).matmul(leaves[1]).squared().mean()
                kept = MemoryStatistics.liveBytes - before
                return loss.gradients(withRespectTo: leaves)
            }
            return (gradients, kept)
        }
        let (exact, fullBytes) = run(.none, trainableNorm: false)
        let (compressed, int8Bytes) = run(.int8, trainableNorm: false)
        let a = try XCTUnwrap(exact[0]).scalars, b = try XCTUnwrap(compressed[0]).scalars
        let relative = zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }.squareRoot() / a.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
        print(String(format: "int8 group-norm input: relative gradient error of w1 = %.4f%%", relative * 100))
        XCTAssertLessThan(relative, 0.01)
        XCTAssertGreaterThan(relative, 0)
        XCTAssertEqual(fullBytes - int8Bytes, 64 * 256 * 3, accuracy: 64, "the norm's saved input shrinks from 4 bytes to 1")
        let (_, trainableShiftBytes) = run(.int8, trainableNorm: false, trainableShift: true)
        XCTAssertEqual(trainableShiftBytes, int8Bytes, "a trainable shift alone still lets the input be compressed")
        // With a trainable scale, its gradient needs the exact input: nothing is compressed.
        let (_, trainableBytes) = run(.int8, trainableNorm: true)
        let (_, trainableExactBytes) = run(.none, trainableNorm: true)
        XCTAssertEqual(trainableBytes, trainableExactBytes)
    }
}
