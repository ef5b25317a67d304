import Foundation
import XCTest
@testable import PermafrostTensor

final class EngineSemanticsTests: XCTestCase {
    func testPhiloxMatchesRandom123KnownAnswers() {
        // Known-answer vectors of Random123's philox4x32-10 (kat_vectors).
        func block(_ c: (UInt32, UInt32, UInt32, UInt32), _ k: (UInt32, UInt32)) -> [UInt32] {
            let r = PhiloxGenerator.block(seed: UInt64(k.1) << 32 | UInt64(k.0),
                                          stream: UInt64(c.3) << 32 | UInt64(c.2),
                                          counter: UInt64(c.1) << 32 | UInt64(c.0))
            return [r.0, r.1, r.2, r.3]
        }
        XCTAssertEqual(block((0, 0, 0, 0), (0, 0)), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8])
        XCTAssertEqual(block((.max, .max, .max, .max), (.max, .max)), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd])
        XCTAssertEqual(block((0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), (0xa409_3822, 0x299f_31d0)),
                       [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1])
    }

    func testSameSeedSameBitsAndStreamsDiffer() {
        var a = PhiloxGenerator(seed: 42), b = PhiloxGenerator(seed: 42), c = PhiloxGenerator(seed: 42, stream: 1)
        let x = Tensor(randomNormal: [1000], generator: &a), y = Tensor(randomNormal: [1000], generator: &b)
        XCTAssertEqual(x.scalars, y.scalars)
        XCTAssertNotEqual(x.scalars, Tensor(randomNormal: [1000], generator: &c).scalars)
        // Moments of the normal sampler.
        let mean = x.scalars.reduce(0, +) / 1000
        let variance = x.scalars.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 1000
        XCTAssertEqual(mean, 0, accuracy: 0.1)
        XCTAssertEqual(variance, 1, accuracy: 0.15)
        var u = PhiloxGenerator(seed: 7)
        let uniform = Tensor(randomUniform: [10_000], lower: -2, upper: 3, generator: &u).scalars
        XCTAssert(uniform.allSatisfy { $0 >= -2 && $0 < 3 })
        XCTAssertEqual(uniform.reduce(0, +) / 10_000, 0.5, accuracy: 0.05)
    }

    func testCopyOnWriteAndReshapeSharing() {
        let original = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        let view = original.reshaped([3, 2])
        XCTAssert(view.storage === original.storage, "reshape must not copy")
        XCTAssert(original.expandingShape(at: 1).squeezed().storage === original.storage, "squeeze must not copy")
        var copy = original
        copy.withUnsafeMutableBufferPointer { $0[0] = 100 }
        XCTAssertEqual(original.scalars[0], 1, "writing a copy must not change the original")
        XCTAssertEqual(copy.scalars[0], 100)
        XCTAssertEqual(view.scalars[0], 1)
        XCTAssertEqual(original[1, 2], 6)
    }

    func testGradientsOfReusedTensorsAccumulate() {
        let x = Tensor(shape: [3], scalars: [1, 2, 3])
        let (value, gradients) = valueAndGradient(at: [x.requiringGradient()]) { p in (p[0] * p[0] + p[0] * 3).sum() }
        XCTAssertEqual(value.scalar, 14 + 18)
        XCTAssertEqual(gradients[0]?.scalars, [5, 7, 9])
    }

    func testFrozenParametersGetNoGradient() {
        let w = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        let b = Tensor(shape: [2], scalars: [0.5, -0.5])
        let x = Tensor(shape: [1, 2], scalars: [1, 1])
        let (_, gradients) = valueAndGradient(at: [w.requiringGradient(), b]) { p in (x.matmul(p[0], transposeOther: true) + p[1]).sum() }
        XCTAssertEqual(gradients[0]?.scalars, [1, 1, 1, 1])
        XCTAssertNil(gradients[1], "a frozen parameter must get no gradient")

        let named = valueAndGradient(at: ["w": w, "b": b.requiringGradient()]) { p in (x.matmul(p["w"]!, transposeOther: true) + p["b"]!).sum() }
        XCTAssertEqual(Set(named.gradients.keys), ["b"])
        XCTAssertEqual(named.gradients["b"]?.scalars, [1, 1])
    }

    func testNoRecordingWithoutTrainableInputs() {
        let x = Tensor(shape: [2], scalars: [1, 2]).requiringGradient()
        XCTAssert((x * 2).requiresGradient)
        XCTAssertFalse(GradientRecording.withoutRecording { (x * 2).requiresGradient })
        XCTAssertFalse((Tensor.ones([2]) * 2).requiresGradient)
    }

    func testMaxSharesGradientAmongTies() {
        let x = Tensor(shape: [4], scalars: [1, 3, 3, 2])
        let (_, g) = valueAndGradient(at: [x.requiringGradient()]) { $0[0].max() }
        XCTAssertEqual(g[0]?.scalars, [0, 0.5, 0.5, 0])
    }

    func testThreadCountDoesNotChangeResults() {
        var generator = PhiloxGenerator(seed: 3)
        let x = Tensor(randomNormal: [64, 1024], generator: &generator)
        let previous = Parallel.threadCount
        defer { Parallel.threadCount = previous }
        Parallel.threadCount = 1
        let single = (x.silu() * x).softmax(alongAxis: 1).sum(alongAxes: [1]).scalars
        Parallel.threadCount = 4
        let multi = (x.silu() * x).softmax(alongAxis: 1).sum(alongAxes: [1]).scalars
        XCTAssertEqual(single, multi)
    }
}

final class ReadmeExampleTests: XCTestCase {
    /// The README's example, verbatim in substance: it must compile and do what the comment says.
    func testReadmeExample() {
        var rng = PhiloxGenerator(seed: 0)
        let x = Tensor(randomNormal: [32, 784], generator: &rng)
        let w1 = Tensor(randomNormal: [256, 784], standardDeviation: 0.05, generator: &rng)
        let w2 = Tensor(randomNormal: [10, 256], standardDeviation: 0.05, generator: &rng).requiringGradient()
        let labels = (0..<32).map { $0 % 10 }
        let ((loss, gradients), statistics) = KernelCounters.measure {
            valueAndGradient(at: [w1, w2]) { p in
                crossEntropy(logits: x.matmul(p[0], transposeOther: true).relu().matmul(p[1], transposeOther: true), labels: labels)
            }
        }
        XCTAssert(loss.scalar.isFinite)
        XCTAssertNil(gradients[0])
        XCTAssertEqual(gradients[1]?.shape, [10, 256])
        XCTAssertEqual(statistics.gemms.map(\.role), [.forward, .forward, .weightGradient])
    }
}

final class FastMathTests: XCTestCase {
    /// The vectorisable exp/tanh/sigmoid stay within a few ulp of the Double-precision functions.
    func testAccuracyAgainstDoublePrecision() {
        var worstExp: Double = 0, worstTanh: Double = 0, worstSigmoid: Double = 0
        var x: Float = -87
        while x < 88.5 {
            let e = Foundation.exp(Double(x))
            worstExp = max(worstExp, Swift.abs(Double(FastMath.exp(x)) - e) / e)
            x += 0.0137
        }
        x = -12
        while x < 12 {
            let t = Foundation.tanh(Double(x)), s = 1 / (1 + Foundation.exp(-Double(x)))
            worstTanh = max(worstTanh, Swift.abs(Double(FastMath.tanh(x)) - t) / Swift.max(Swift.abs(t), 1e-30))
            worstSigmoid = max(worstSigmoid, Swift.abs(Double(FastMath.sigmoid(x)) - s) / s)
            x += 0.000731
        }
        XCTAssertLessThan(worstExp, 4e-7)
        XCTAssertLessThan(worstTanh, 6e-7)
        XCTAssertLessThan(worstSigmoid, 6e-7)
        XCTAssertEqual(FastMath.exp(-200), 0)
        XCTAssertEqual(FastMath.exp(200), .infinity)
        XCTAssert(FastMath.exp(.nan).isNaN && FastMath.tanh(.nan).isNaN)
        XCTAssertEqual(FastMath.tanh(30), 1)
        XCTAssertEqual(FastMath.tanh(-30), -1)
        XCTAssertEqual(FastMath.tanh(0), 0)
    }

    /// The polynomial erf stays within its 1.5e-7 bound (plus Float rounding) of libm's Double erf,
    /// and GELU built on it matches the exact Double-precision GELU.
    func testErfAndGELUAgainstDoublePrecision() {
        var worstErf: Double = 0, worstGELU: Double = 0
        var x: Float = -9
        while x < 9 {
            worstErf = max(worstErf, Swift.abs(Double(FastMath.erf(x)) - Foundation.erf(Double(x))))
            let exact = 0.5 * Double(x) * (1 + Foundation.erf(Double(x) / 2.0.squareRoot()))
            worstGELU = max(worstGELU, Swift.abs(Double(Element.GELU()(x)) - exact) / Swift.max(1, Swift.abs(Double(x))))
            x += 0.000913
        }
        // 1.5e-7 is the approximation's bound in exact arithmetic; Float evaluation adds a few ulp.
        XCTAssertLessThan(worstErf, 6e-7)
        XCTAssertLessThan(worstGELU, 3e-7)
        XCTAssertEqual(FastMath.erf(0), 0, accuracy: 2e-7)
        XCTAssertEqual(FastMath.erf(20), 1)
        XCTAssertEqual(FastMath.erf(-20), -1)
        XCTAssertEqual(FastMath.onePlusErf(-20), 0)
        XCTAssert(FastMath.erf(.nan).isNaN)
    }
}
