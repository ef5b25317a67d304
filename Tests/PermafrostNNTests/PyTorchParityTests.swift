import Foundation
import XCTest
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Models initialised from PyTorch-written safetensors give PyTorch's logits, and 5 AdamW steps give
/// PyTorch's weights, with and without half of the tensors frozen (`Scripts/fixtures/nn_parity.py`).
final class PyTorchParityTests: XCTestCase {
    func check(_ name: String, model makeModel: () -> Sequential, file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try SafetensorsFile(contentsOf: fixtureURL("\(name)_expected.safetensors"))
        let x = try expected.tensor(named: "x")
        let labels = try expected.int64s(named: "labels").map { Int($0) }
        let frozenInHalf = expected.metadata["frozen_in_half"]!.split(separator: ",").map(String.init)
        XCTAssertEqual(expected.metadata["steps"], "5")

        for variant in ["full", "half"] {
            let model = makeModel()
            try model.load(contentsOf: fixtureURL("\(name)_init.safetensors"))
            let initial = Dictionary(uniqueKeysWithValues: model.stateDictionary().map { ($0.name, $0.tensor.scalars) })
            assertClose(GradientRecording.withoutRecording { model(x) }, try expected.tensor(named: "logits"), "\(name) logits", file: file, line: line)
            if variant == "half" { try model.freeze(names: frozenInHalf) }
            let optimizer = Adam.adamW(learningRate: 1e-2, weightDecay: 0.1)
            for _ in 0..<5 {
                _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: model(x), labels: labels) }
            }
            for (parameterName, parameter) in model.namedParameters() {
                let reference = try expected.tensor(named: "\(variant).\(parameterName)")
                assertClose(parameter.value, reference, "\(name) \(variant) \(parameterName) after 5 AdamW steps", file: file, line: line)
                if parameter.isFrozen {
                    XCTAssertEqual(parameter.value.scalars.map(\.bitPattern), initial[parameterName]!.map(\.bitPattern),
                                   "frozen \(parameterName) must stay bit-identical", file: file, line: line)
                }
            }
            XCTAssertEqual(optimizer.tensorsWithState, Set(model.trainableParameters().map(\.name)), "state only for trainable tensors")
        }
    }

    func testMLPMatchesPyTorch() throws { try check("mlp", model: fixtureMLP) }
    func testCNNMatchesPyTorch() throws { try check("cnn", model: fixtureCNN) }
}
