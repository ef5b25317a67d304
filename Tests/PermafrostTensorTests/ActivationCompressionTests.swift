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

    func testInt8ActivationsGiveGradientsWithinOnePercentAndSaveMemory() throws {
        var g = PhiloxGenerator(seed: 21)
        let x = Tensor(randomNormal: [64, 128], generator: &g)
        let w1 = Tensor(randomNormal: [128, 256], generator: &g) * 0.09
        let w2 = Tensor(randomNormal: [256, 256], generator: &g) * 0.06
        let w3 = Tensor(randomNormal: [256, 64], generator: &g) * 0.06
        func run(_ mode: ActivationCompression) -> ([Tensor?], Int) {
            let leaves = [w1, w2, w3].map { $0.requiringGradient() }
            let before = MemoryStatistics.liveBytes
            var kept = 0
            let gradients: [Tensor?] = ActivationCompression.with(mode) {
                let loss = network(x, leaves[0], leaves[1], leaves[2])
                kept = MemoryStatistics.liveBytes - before
                return loss.gradients(withRespectTo: leaves)
            }
            return (gradients, kept)
        }
        let (exact, fullBytes) = run(.none)
        let (compressed, int8Bytes) = run(.int8)
        for (index, (a, b)) in zip(exact, compressed).enumerated() {
            let a = try XCTUnwrap(a).scalars, b = try XCTUnwrap(b).scalars
            let difference = zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }.squareRoot()
            let norm = a.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
            let relative = difference / norm
            print(String(format: "int8 activations: relative gradient error of w%d = %.4f%%", index + 1, relative * 100))
            XCTAssertLessThan(relative, 0.01, "w\(index + 1)")
            if index < 2 { XCTAssertGreaterThan(relative, 0, "w\(index + 1)'s gradient passes through compressed activations") }
        }
        // The SiLU, GELU and ReLU inputs (64×(256+256+64) floats) shrink from 4 bytes to 1; tanh's
        // output stays alive anyway (the loss squares it), so its int8 copy costs 64×64 extra bytes.
        print("activation memory kept by the forward pass: \(fullBytes) B full, \(int8Bytes) B int8")
        XCTAssertEqual(fullBytes - int8Bytes, 64 * (256 + 256 + 64) * 3 - 64 * 64, accuracy: 64)
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
}
