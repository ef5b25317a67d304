import Foundation
import XCTest
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Task vectors: exact round trips, refusals that change nothing, and OrthoReg's penalty against a
/// direct Float64 computation.
final class TaskVectorTests: XCTestCase {
    func bits(_ model: Module) -> [String: [UInt32]] {
        Dictionary(uniqueKeysWithValues: model.stateDictionary().map { ($0.name, $0.tensor.scalars.map(\.bitPattern)) })
    }

    /// A base, and the same model after a few real AdamW steps on half of its tensors.
    func baseAndFineTuned() throws -> (Sequential, Sequential) {
        let base = fixtureMLP(), tuned = fixtureMLP()
        var g = PhiloxGenerator(seed: 9)
        let x = Tensor(randomNormal: [8, 12], generator: &g)
        try tuned.freeze(names: ["0.weight", "0.bias"])
        let optimizer = Adam.adamW(learningRate: 3e-2)
        for _ in 0..<4 { _ = try tuned.trainingStep(optimizer: optimizer) { crossEntropy(logits: tuned(x), labels: [0, 1, 2, 3, 0, 1, 2, 3]) } }
        return (base, tuned)
    }

    func testAddingAndSubtractingAreExactOnTheVectorsOwnBase() throws {
        let (base, tuned) = try baseAndFineTuned()
        let original = bits(base)
        let tau = try TaskVector(pretrained: base, fineTuned: tuned)
        XCTAssertEqual(tau.names, ["2.bias", "2.weight", "4.bias", "4.weight"], "frozen tensors are not part of the vector")
        try tau.apply(to: base)
        XCTAssertEqual(bits(base), bits(tuned), "base + τ is the fine-tuned model, bit for bit")
        try tau.scaled(by: -1).apply(to: base)
        XCTAssertEqual(bits(base), original, "and subtracting τ gives the base back, bit for bit")

        let file = temporaryDirectory().appendingPathComponent("tau.safetensors")
        try tau.write(to: file)
        XCTAssertEqual(try TaskVector(contentsOf: file), tau, "F64 on disk: the same differences")
        let doubled = try tau + tau
        XCTAssertEqual(doubled, tau.scaled(by: 2))
    }

    func testRefusalsNameTheProblemAndChangeNothing() throws {
        let (base, tuned) = try baseAndFineTuned()
        let tau = try TaskVector(pretrained: base, fineTuned: tuned)
        try base.apply(FreezePlan(frozen: ["4.weight"], isEnforced: true))
        let before = bits(base)
        XCTAssertThrowsError(try tau.apply(to: base)) { error in
            XCTAssertEqual(error as? TaskVectorError, .guardedTensor("4.weight"))
            XCTAssert("\(error)".contains("publisher's guard"), "\(error)")
        }
        XCTAssertEqual(bits(base), before, "a refused vector changes nothing")

        var g = PhiloxGenerator(seed: 1)
        let other = Sequential([Linear(12, 16, generator: &g), ReLU(), Linear(16, 9, generator: &g)])
        XCTAssertThrowsError(try tau.apply(to: other)) { error in XCTAssertEqual(error as? TaskVectorError, .shapeMismatch(tensor: "2.bias", expected: [9], actual: [8])) }
        XCTAssertThrowsError(try TaskVector(pretrained: base, fineTuned: other)) { error in XCTAssert("\(error)".contains("tensors differ"), "\(error)") }

        let notAVector = temporaryDirectory().appendingPathComponent("model.safetensors")
        try base.save(to: notAVector)
        XCTAssertThrowsError(try TaskVector(contentsOf: notAVector)) { error in XCTAssert("\(error)".contains("is not a task vector"), "\(error)") }
    }

    /// ‖ΔWᵀΔW − I‖_F (ΔWΔWᵀ for wide ΔW) summed over trainable matrices, against Float64 loops; zero
    /// for an update with orthonormal columns; biases and frozen matrices do not count.
    func testOrthoRegPenaltyMatchesItsDefinition() throws {
        let model = fixtureMLP()
        let regularizer = OrthogonalUpdateRegularizer(pretrained: model)
        XCTAssertEqual(regularizer.reference.map(\.name), ["0.weight", "2.weight", "4.weight"])
        var g = PhiloxGenerator(seed: 4)
        var expected = 0.0
        for (name, pretrained) in regularizer.reference {
            let parameter = model.parameter(named: name)!
            let delta = Tensor(randomNormal: parameter.shape, generator: &g) * 0.3
            parameter.value = pretrained + delta
            let (rows, columns) = (delta.shape[0], delta.shape[1]), d = delta.scalars.map(Double.init)
            let n = min(rows, columns)
            var squares = 0.0
            for i in 0..<n {
                for j in 0..<n {
                    var dot = 0.0
                    if rows < columns { for k in 0..<columns { dot += d[i * columns + k] * d[j * columns + k] } }
                    else { for k in 0..<rows { dot += d[k * columns + i] * d[k * columns + j] } }
                    squares += (dot - (i == j ? 1 : 0)) * (dot - (i == j ? 1 : 0))
                }
            }
            expected += squares.squareRoot()
        }
        XCTAssertEqual(Double(regularizer.penalty(model).scalar), expected, accuracy: expected * 1e-5)

        // An update whose columns are orthonormal costs nothing.
        let tall = OrthogonalUpdateRegularizer(pretrained: Sequential([Linear(2, 3, bias: false, generator: &g)]))
        let layer = Sequential([Linear(2, 3, bias: false, generator: &g)])
        layer.parameter(named: "0.weight")!.value = tall.reference[0].value + Tensor(shape: [3, 2], scalars: [0.6, 0, 0.8, 0, 0, 1])
        XCTAssertEqual(tall.penalty(layer).scalar, 0, accuracy: 1e-6)
        try layer.freeze(names: ["0.weight"])
        XCTAssertEqual(tall.penalty(layer).scalar, 0, "a frozen matrix does not count")
    }
}

/// Dopamine's per-neuron gates: the hardened gate makes exactly the soft gate's decisions, a gated
/// frozen network starts as its base, and only τ and γ (two per unit) train.
final class NeuronGateTests: XCTestCase {
    func testHardenedGateMatchesTheSoftDecisionAndOnlyGatesTrain() throws {
        var g = PhiloxGenerator(seed: 8)
        let first = Linear(12, 32, generator: &g), second = Linear(32, 4, generator: &g)
        let base = Sequential([first, ReLU(), second])
        let gate = NeuronGate(width: 32)
        let gated = Sequential([first, gate, second])
        let x = Tensor(randomNormal: [16, 12], generator: &g)
        let plain = GradientRecording.withoutRecording { base(x) }
        try gated.freeze(names: ["0.weight", "0.bias", "2.weight", "2.bias"])
        XCTAssertEqual(gated.trainableParameters().map(\.name), ["1.threshold", "1.gain"])
        XCTAssertEqual(gated.trainableParameters().reduce(0) { $0 + $1.parameter.value.count }, 64, "two parameters per unit")
        gate.hardened = true
        XCTAssertEqual(GradientRecording.withoutRecording { gated(x) }.scalars, plain.scalars, "hardened at its initial τ, the gate passes every unit")
        gate.hardened = false
        assertClose(GradientRecording.withoutRecording { gated(x) }, plain, tolerance: 1e-2, "the smooth gate starts close to the base")

        gate.threshold.value = Tensor(randomNormal: [32], generator: &g) * 0.5
        let h = GradientRecording.withoutRecording { first(x).relu() }
        let soft = gate.gate(h).scalars
        gate.hardened = true
        let hard = gate.gate(h).scalars
        XCTAssertEqual(hard, soft.map { $0 > 0.5 ? 1 : 0 }, "hard gate = soft gate's decision, unit by unit")
        XCTAssert(hard.contains(0) && hard.contains(1), "the thresholds switch some units off and leave others on")
    }
}
