import Foundation
import XCTest
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

func fixtureURL(_ name: String) -> URL {
    Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures")!
}

/// Random-weight diffusers UNet2DModels saved with `save_pretrained` (`Scripts/fixtures/unet_parity.py`)
/// load unchanged and give diffusers' outputs to 1e-4 max-abs.
final class UNetParityTests: XCTestCase {
    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = fixtureURL("unet_\(name)")
        let model = try UNet2DModel(directory: folder)
        let reference = try SafetensorsFile(contentsOf: folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(Set(model.namedParameters().map(\.name)), Set(reference.names), "parameter names must be diffusers'", file: file, line: line)
        for kind in ["int", "float"] {
            let inputs = try SafetensorsFile(contentsOf: folder.appendingPathComponent("inputs_\(kind).safetensors"))
            let expected = try SafetensorsFile(contentsOf: folder.appendingPathComponent("expected_\(kind).safetensors")).tensor(named: "sample")
            let timesteps: [Float] = kind == "int" ? try inputs.int64s(named: "timestep").map(Float.init) : try inputs.tensor(named: "timestep").scalars
            let labels = inputs.names.contains("class_labels") ? try inputs.int64s(named: "class_labels").map { Int($0) } : nil
            let output = GradientRecording.withoutRecording { model(try! inputs.tensor(named: "sample"), timesteps: timesteps, classLabels: labels) }
            XCTAssertEqual(output.shape, expected.shape, file: file, line: line)
            let error = zip(output.scalars, expected.scalars).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name) (\(kind) timesteps): max abs error \(error)", file: file, line: line)
        }
    }

    func testAttentionWithClassEmbedding() throws { try check("attention_classes") }
    func testPlainUnconditional() throws { try check("plain_unconditional") }
    func testAttentionEverywhere() throws { try check("attention_everywhere") }
    func testNoMidBlock() throws { try check("no_mid_block") }

    func testSaveWritesAFolderThatLoadsBackIdentically() throws {
        let model = try UNet2DModel(directory: fixtureURL("unet_attention_classes"))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unet-\(UUID().uuidString)")
        try model.save(directory: directory)
        let again = try UNet2DModel(directory: directory)
        XCTAssertEqual(again.config, model.config)
        for ((n1, t1), (n2, t2)) in zip(model.stateDictionary(), again.stateDictionary()) {
            XCTAssertEqual(n1, n2)
            XCTAssertEqual(t1.scalars, t2.scalars)
        }
    }

    func testUnsupportedConfigValuesAreNamed() throws {
        let base = try Data(contentsOf: fixtureURL("unet_attention_classes").appendingPathComponent("config.json"))
        var object = try JSONSerialization.jsonObject(with: base) as! [String: Any]
        for (key, value, expectedField) in [("act_fn", "gelu" as Any, "act_fn"), ("time_embedding_type", "fourier", "time_embedding_type"),
                                            ("down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D"], "down_block_types"),
                                            ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"),
                                            ("class_embed_type", "timestep", "class_embed_type"), ("norm_num_groups", 3, "norm_num_groups")] {
            var modified = object
            modified[key] = value
            let data = try JSONSerialization.data(withJSONObject: modified)
            XCTAssertThrowsError(try UNet2DConfig(json: data), key) { error in
                XCTAssert("\(error)".contains(expectedField), "error for \(key) must name it: \(error)")
            }
        }
        object["mystery_future_field"] = 3
        XCTAssertNoThrow(try UNet2DConfig(json: try JSONSerialization.data(withJSONObject: object)))
    }
}
