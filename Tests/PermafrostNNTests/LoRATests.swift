import Foundation
import XCTest
import PermafrostIO
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// PEFT parity (`Scripts/fixtures/lora_parity.py`): an adapter folder written by `peft` gives, on
/// Permafrost's model, the outputs of PyTorch with W + ΔW (which peft's own forward matches on Linear
/// and Conv2d targets; on attention modules peft 0.21 adds the out_proj delta twice, huggingface/peft#3774),
/// and 5 AdamW steps on the adapter give PyTorch's adapter weights; plus what adapters may never do
/// (change a base or guarded tensor) and how bad folders are refused.
final class LoRATests: XCTestCase {
    func fixtureEncoder() -> EncoderClassifier {
        EncoderClassifier(vocabulary: 50, maxLength: 16, dimension: 16, heads: 4, feedForward: 32, layers: 2, classes: 3)
    }

    func encoderForward(_ model: Module, _ x: Tensor) -> Tensor {
        (model as! EncoderClassifier)(tokens: x.scalars.map { Int($0) }, batch: x.shape[0], length: x.shape[1])
    }

    func sequentialForward(_ model: Module, _ x: Tensor) -> Tensor { (model as! Sequential)(x) }

    func check(_ name: String, model makeModel: () -> Module, patterns: [String], forward: @escaping (Module, Tensor) -> Tensor,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = fixtureURL("lora_\(name)")
        let expected = try SafetensorsFile(contentsOf: folder.appendingPathComponent("expected.safetensors"))
        let x = try expected.tensor(named: "x")
        let labels = try expected.int64s(named: "labels").map { Int($0) }
        let weightTolerance = try trainedWeightTolerance(expected)
        let model = makeModel()
        try model.load(contentsOf: folder.appendingPathComponent("base.safetensors"))
        let base = Dictionary(uniqueKeysWithValues: model.stateDictionary().map { ($0.name, $0.tensor.scalars.map(\.bitPattern)) })

        let adapter = try PEFTAdapter(directory: folder.appendingPathComponent("adapter"))
        // The globs a Permafrost user writes select exactly the layers peft adapted.
        XCTAssertEqual(try model.lowRankTargets(matching: patterns), adapter.modules.sorted { a, b in
            model.namedModules().firstIndex { $0.name == a }! < model.namedModules().firstIndex { $0.name == b }!
        }, file: file, line: line)
        try adapter.attach(to: model)
        assertClose(GradientRecording.withoutRecording { forward(model, x) }, try expected.tensor(named: "output"), "\(name) output with peft's adapter",
                    file: file, line: line)
        XCTAssertEqual(Set(model.trainableParameters().map(\.name)), Set(adapter.tensors.keys), "only the adapter trains", file: file, line: line)

        let optimizer = Adam.adamW(learningRate: 1e-2, weightDecay: 0.1)
        for _ in 0..<5 { _ = try model.trainingStep(optimizer: optimizer) { crossEntropy(logits: forward(model, x), labels: labels) } }
        let trained = try PEFTAdapter(directory: folder.appendingPathComponent("trained"))
        for (tensorName, reference) in trained.tensors {
            assertClose(try XCTUnwrap(model.parameter(named: tensorName)).value, reference, tolerance: weightTolerance,
                        "\(name) \(tensorName) after 5 AdamW steps", file: file, line: line)
        }
        XCTAssertEqual(optimizer.tensorsWithState, Set(adapter.tensors.keys), "optimizer state only for the adapter", file: file, line: line)
        for (tensorName, bits) in base {
            XCTAssertEqual(model.parameter(named: tensorName)!.value.scalars.map(\.bitPattern), bits, "base tensor \(tensorName) changed",
                           file: file, line: line)
        }

        // Written back in PEFT's layout, the adapter reads back identically.
        let written = temporaryDirectory()
        try PEFTAdapter(model: model, baseModel: "fixture").write(to: written)
        let again = try PEFTAdapter(directory: written)
        XCTAssertEqual(again.configuration, adapter.configuration, file: file, line: line)
        XCTAssertEqual(Set(again.tensors.keys), Set(adapter.tensors.keys), file: file, line: line)
        for (tensorName, tensor) in again.tensors {
            XCTAssertEqual(tensor.scalars, model.parameter(named: tensorName)!.value.scalars, file: file, line: line)
        }
        let writtenNames = try SafetensorsFile(contentsOf: written.appendingPathComponent(PEFTAdapter.weightsFileName)).names
        let peftNames = try SafetensorsFile(contentsOf: folder.appendingPathComponent("adapter/adapter_model.safetensors")).names
        XCTAssertEqual(Set(writtenNames), Set(peftNames), "PEFT's tensor names", file: file, line: line)

        // Merging gives the adapted outputs from plain layers.
        let adapted = GradientRecording.withoutRecording { forward(model, x) }
        XCTAssertEqual(try model.mergeLowRankAdapters().count, adapter.modules.count, file: file, line: line)
        XCTAssertTrue(model.lowRankAdapters().isEmpty, file: file, line: line)
        XCTAssertEqual(Set(model.namedParameters().map(\.name)), Set(base.keys), "merged: the base's tensor names", file: file, line: line)
        assertClose(GradientRecording.withoutRecording { forward(model, x) }, adapted, tolerance: 1e-5, "\(name) merged", file: file, line: line)
        // Unmerging takes ΔW back out (within rounding) and re-attaches the adapters.
        XCTAssertEqual(try model.unmergeLowRankAdapters().count, adapter.modules.count, file: file, line: line)
        XCTAssertEqual(model.lowRankAdapters().count, adapter.modules.count, file: file, line: line)
        for (tensorName, _) in base where !tensorName.contains("lora_") {
            let restored = model.parameter(named: tensorName)!.value, original = base[tensorName]!.map(Float.init(bitPattern:))
            assertClose(restored, Tensor(shape: restored.shape, scalars: original), tolerance: 1e-5, "\(tensorName) after unmerge", file: file, line: line)
        }
        assertClose(GradientRecording.withoutRecording { forward(model, x) }, adapted, tolerance: 1e-5, "\(name) unmerged", file: file, line: line)
    }

    func testMLPAdapterMatchesPEFT() throws {
        try check("mlp", model: fixtureMLP, patterns: ["0", "2"], forward: sequentialForward)
    }

    /// The packed in-projection (merged into the weight, as peft does), its out_proj, and the
    /// feed-forward Linears, with rank-stabilised scaling.
    func testEncoderAdapterMatchesPEFT() throws {
        try check("encoder", model: fixtureEncoder, patterns: ["*.self_attn", "*.linear1", "*.linear2"], forward: encoderForward)
    }

    func testNewAdaptersStartAsTheBaseAndTrainOnlyThemselves() throws {
        let model = fixtureMLP()
        var g = PhiloxGenerator(seed: 3)
        let x = Tensor(randomNormal: [5, 12], generator: &g)
        let before = GradientRecording.withoutRecording { model(x) }.scalars
        let targets = try model.addLowRankAdapters(matching: ["*"], configuration: LoRAConfiguration(rank: 2, alpha: 4, dropout: 0.1))
        XCTAssertEqual(targets, ["0", "2", "4"])
        model.setTraining(false)
        XCTAssertEqual(GradientRecording.withoutRecording { model(x) }.scalars, before, "B = 0: the adapted model starts as the base")
        model.setTraining(true)
        XCTAssertEqual(model.trainableParameters().count, 6)
        XCTAssertEqual(model.trainableParameters().reduce(0) { $0 + $1.parameter.value.count }, (12 + 16) * 2 + (16 + 8) * 2 + (8 + 4) * 2)
        let ((_, gradients), statistics) = KernelCounters.measure {
            model.valueAndGradient { crossEntropy(logits: model(x), labels: [0, 1, 2, 3, 0]) }
        }
        XCTAssertEqual(Set(gradients.keys), Set(model.trainableParameters().map(\.name)), "gradients only for the adapter")
        // Every weight-gradient kernel is an adapter's (rank 2 on one side); none is a frozen base weight's.
        XCTAssertEqual(statistics.gemms(.weightGradient).count, 6)
        XCTAssert(statistics.gemms(.weightGradient).allSatisfy { $0.m == 2 || $0.n == 2 }, "\(statistics.gemms(.weightGradient))")
        XCTAssertThrowsError(try model.addLowRankAdapters(matching: ["0"], configuration: LoRAConfiguration())) { error in
            XCTAssertEqual(error as? LoRAError, .alreadyAdapted(module: "0"))
        }
        XCTAssertThrowsError(try fixtureMLP().addLowRankAdapters(matching: ["1*"], configuration: LoRAConfiguration())) { error in
            XCTAssert("\(error)".contains("'1*' matches no Linear"), "\(error)")
        }
        XCTAssertThrowsError(try fixtureMLP().addLowRankAdapters(matching: ["0"], configuration: LoRAConfiguration(rank: 0))) { error in
            XCTAssert("\(error)".contains("rank must be positive"), "\(error)")
        }
    }

    /// An adapter may never give back what an enforced guard took away: adapting a guarded weight
    /// is refused (nothing attached), and so is merging into one.
    func testGuardedWeightsCannotBeAdaptedOrMergedInto() throws {
        let model = fixtureMLP()
        try model.apply(FreezePlan(frozen: ["2.weight"], isEnforced: true))
        XCTAssertThrowsError(try model.addLowRankAdapters(matching: ["*"], configuration: LoRAConfiguration())) { error in
            XCTAssertEqual(error as? LoRAError, .guardedTarget(module: "2", tensor: "2.weight"))
            XCTAssert("\(error)".contains("publisher's guard"), "\(error)")
        }
        XCTAssertTrue(model.lowRankAdapters().isEmpty, "a refused call attaches nothing")
        XCTAssertEqual(try model.addLowRankAdapters(matching: ["0", "4"], configuration: LoRAConfiguration()), ["0", "4"])

        let merged = fixtureMLP()
        try merged.addLowRankAdapters(matching: ["0"], configuration: LoRAConfiguration())
        try merged.apply(FreezePlan(frozen: ["0.weight"], isEnforced: true))
        XCTAssertThrowsError(try merged.mergeLowRankAdapters()) { error in
            XCTAssertEqual(error as? LoRAError, .guardedTarget(module: "0", tensor: "0.weight"))
        }
        XCTAssertEqual(merged.lowRankAdapters().count, 1)

        let encoder = fixtureEncoder()
        try encoder.apply(FreezePlan(frozen: ["layers.1.self_attn.out_proj.weight"], isEnforced: true))
        XCTAssertThrowsError(try encoder.addLowRankAdapters(matching: ["layers.1.self_attn"], configuration: LoRAConfiguration())) { error in
            XCTAssertEqual(error as? LoRAError, .guardedTarget(module: "layers.1.self_attn.out_proj", tensor: "layers.1.self_attn.out_proj.weight"))
        }
        XCTAssertThrowsError(try encoder.addLowRankAdapters(matching: ["layers.0.self_attn.out_proj"], configuration: LoRAConfiguration())) { error in
            XCTAssert("\(error)".contains("target 'layers.0.self_attn'"), "\(error)")
        }
    }

    func testBadAdapterFoldersAreRefusedWithTheReason() throws {
        let source = fixtureURL("lora_mlp/adapter")
        func variant(_ edit: (inout [String: Any]) -> Void, weights: Data? = nil) throws -> URL {
            let folder = temporaryDirectory()
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("adapter_config.json"))) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: folder.appendingPathComponent("adapter_config.json"))
            try (weights ?? Data(contentsOf: source.appendingPathComponent("adapter_model.safetensors")))
                .write(to: folder.appendingPathComponent("adapter_model.safetensors"))
            return folder
        }
        func expectError(_ folder: URL, _ fragment: String, model: Module = fixtureMLP(), line: UInt = #line) {
            XCTAssertThrowsError(try PEFTAdapter(directory: folder).attach(to: model), line: line) { error in
                XCTAssert("\(error)".contains(fragment), "'\(error)' should mention '\(fragment)'", line: line)
            }
        }
        expectError(try variant { $0["peft_type"] = "IA3" }, "only LORA")
        expectError(try variant { $0["use_dora"] = true }, "use_dora")
        expectError(try variant { $0["r"] = -1 }, "r must be a positive integer")
        expectError(try variant { $0["rank_pattern"] = ["0": 2] }, "rank_pattern")
        expectError(try variant { $0["r"] = 3 }, "has shape [4, 12], the model needs [3, 12]")
        let weights = try Data(contentsOf: source.appendingPathComponent("adapter_model.safetensors"))
        expectError(try variant({ _ in }, weights: weights.prefix(weights.count - 9)), "adapter_model.safetensors")
        expectError(temporaryDirectory(), "adapter_config.json")
        var g = PhiloxGenerator(seed: 1)
        let other = Sequential([Linear(12, 16, generator: &g), ReLU(), Linear(16, 8, generator: &g)])
        expectError(try variant { _ in }, "no adaptable module '0'; closest modules: '0.0'", model: Sequential([other]))
        let renamed = try SafetensorsWriter.encode([SafetensorsWriter.Item(name: "base_model.model.0.weight", tensor: Tensor.zeros([2]))])
        expectError(try variant({ _ in }, weights: renamed), "is not a LoRA tensor")
    }
}

/// The reference weights are PyTorch's in Float64; Adam turns Float32 rounding in small gradients into
/// slightly different steps, so trained weights must be within 1e-5, or within 5× the distance of
/// PyTorch's own Float32 run from the Float64 one (recorded by the fixture script), whichever is larger.
func trainedWeightTolerance(_ expected: SafetensorsFile) throws -> Float {
    let torchError = try XCTUnwrap(expected.metadata["torch_float32_weight_error"].flatMap(Float.init), "fixture lacks torch_float32_weight_error")
    return max(1e-5, 5 * torchError)
}
