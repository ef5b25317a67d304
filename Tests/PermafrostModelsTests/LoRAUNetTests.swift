import Foundation
import XCTest
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// A tiny diffusers UNet2DModel with a PEFT adapter on its attention projections and resnet
/// convolutions (`Scripts/fixtures/lora_parity.py`): peft's outputs, and PyTorch's (Float64) adapter
/// weights after 5 AdamW steps on a noise-prediction loss.
final class LoRAUNetTests: XCTestCase {
    func testUNetAdapterMatchesPEFT() throws {
        let folder = fixtureURL("lora_unet")
        let model = try UNet2DModel(directory: folder.appendingPathComponent("base"))
        let expected = try SafetensorsFile(contentsOf: folder.appendingPathComponent("expected.safetensors"))
        let sample = try expected.tensor(named: "sample"), target = try expected.tensor(named: "target")
        let timesteps = try expected.int64s(named: "timestep").map(Float.init)
        let labels = try expected.int64s(named: "class_labels").map { Int($0) }
        let adapter = try PEFTAdapter(directory: folder.appendingPathComponent("adapter"))
        XCTAssertEqual(Set(try model.lowRankTargets(matching: ["*.to_q", "*.to_k", "*.to_v", "*.to_out.0", "*.conv1", "*.conv2"])),
                       Set(adapter.modules))
        try adapter.attach(to: model)
        let output = GradientRecording.withoutRecording { model(sample, timesteps: timesteps, classLabels: labels) }
        let reference = try expected.tensor(named: "output")
        let error = zip(output.scalars, reference.scalars).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(error, 1e-5, "max abs error \(error) with peft's adapter")

        let optimizer = Adam.adamW(learningRate: 1e-2, weightDecay: 0.1)
        for _ in 0..<5 {
            _ = try model.trainingStep(optimizer: optimizer) { meanSquaredError(model(sample, timesteps: timesteps, classLabels: labels), target) }
        }
        // As in the NN tests: within 1e-5 of PyTorch's Float64 weights, or 5× PyTorch's own Float32 distance from them.
        let torchError = try XCTUnwrap(expected.metadata["torch_float32_weight_error"].flatMap(Float.init))
        let tolerance = max(1e-5, 5 * torchError)
        let trained = try PEFTAdapter(directory: folder.appendingPathComponent("trained"))
        XCTAssertEqual(Set(model.trainableParameters().map(\.name)), Set(trained.tensors.keys))
        for (name, tensor) in trained.tensors {
            let actual = try XCTUnwrap(model.parameter(named: name)).value
            let scale = tensor.scalars.map { abs($0) }.max() ?? 0
            let worst = zip(actual.scalars, tensor.scalars).map { abs($0 - $1) / max(abs($1), 0.1 * scale) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(worst, tolerance, "\(name) after 5 AdamW steps: relative error \(worst)")
        }
    }
}
