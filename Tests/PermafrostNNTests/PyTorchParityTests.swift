import Foundation
import XCTest
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// Models initialised from PyTorch-written safetensors give PyTorch's logits, and 5 AdamW steps give
/// PyTorch's weights, with and without half of the tensors frozen (`Scripts/fixtures/nn_parity.py`).
final class PyTorchParityTests: XCTestCase {
    func check(_ name: String, model makeModel: () -> Sequential, file: StaticString = #filePath, line: UInt = #line) throws {
        try check(name, module: makeModel, forward: { model, x in (model as! Sequential)(x) }, file: file, line: line)
    }

    func check(_ name: String, module makeModel: () -> Module, forward: @escaping (Module, Tensor) -> Tensor,
               weightTolerance: Float = 1e-5, skip: (String) -> Range<Int>? = { _ in nil },
               file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try SafetensorsFile(contentsOf: fixtureURL("\(name)_expected.safetensors"))
        let x = try expected.tensor(named: "x")
        let labels = try expected.int64s(named: "labels").map { Int($0) }
        let frozenInHalf = expected.metadata["frozen_in_half"]!.split(separator: ",").map(String.init)
        XCTAssertEqual(expected.metadata["steps"], "5")

        for variant in ["full", "half"] {
            let model = makeModel()
            try model.load(contentsOf: fixtureURL("\(name)_init.safetensors"))
            let initial = Dictionary(uniqueKeysWithValues: model.stateDictionary().map { ($0.name, $0.tensor.scalars) })
            assertClose(GradientRecording.withoutRecording { forward(model, x) }, try expected.tensor(named: "logits"), "\(name) logits", file: file, line: line)
            if variant == "half" { try model.freeze(names: frozenInHalf) }
            let optimizer = Adam.adamW(learningRate: 1e-2, weightDecay: 0.1)
            for _ in 0..<5 {
                _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: forward(model, x), labels: labels) }
            }
            for (parameterName, parameter) in model.namedParameters() {
                var reference = try expected.tensor(named: "\(variant).\(parameterName)")
                var actual = parameter.value
                if let excluded = skip(parameterName) {
                    // Elements whose exact gradient is zero: Adam turns their rounding noise into ±lr
                    // steps of random sign in either framework. They must stay within 5 steps of init.
                    let initialValues = initial[parameterName]!
                    for i in excluded { XCTAssertLessThanOrEqual(abs(actual.scalars[i] - initialValues[i]), 5.5e-2, file: file, line: line) }
                    let keep = Array(0..<actual.count).filter { !excluded.contains($0) }
                    actual = Tensor(shape: [keep.count], scalars: keep.map { actual.scalars[$0] })
                    reference = Tensor(shape: [keep.count], scalars: keep.map { reference.scalars[$0] })
                }
                assertClose(actual, reference, tolerance: weightTolerance, "\(name) \(variant) \(parameterName) after 5 AdamW steps", file: file, line: line)
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

    /// Embeddings, multi-head attention, layer norm, GELU and mean pooling: PyTorch's
    /// `TransformerEncoderLayer` (post-norm, batch-first).
    func testTransformerEncoderMatchesPyTorch() throws {
        try check("encoder", module: {
            EncoderClassifier(vocabulary: 50, maxLength: 16, dimension: 16, heads: 4, feedForward: 32, layers: 2, classes: 3)
        }, forward: { model, x in
            (model as! EncoderClassifier)(tokens: x.scalars.map { Int($0) }, batch: x.shape[0], length: x.shape[1])
        }, weightTolerance: 3e-5, skip: { name in
            // The key bias shifts every score of a row equally, which softmax ignores: its exact
            // gradient is zero (rows 16..<32 of in_proj_bias).
            name.hasSuffix("self_attn.in_proj_bias") ? 16..<32 : nil
        })
    }
}
