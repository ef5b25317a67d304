import Foundation
import XCTest
@testable import PermafrostTensor

/// Compares chains of operations with PyTorch (Float64 reference) from committed fixtures written by
/// `Scripts/fixtures/tensor_ops.py`: outputs and the gradients of every input, to 1e-5 relative.
final class PyTorchOracleTests: XCTestCase {
    struct StoredTensor: Decodable {
        var shape: [Int]
        var data: [Double]
        var tensor: Tensor { Tensor(shape: shape, scalars: data.map { Float($0) }) }
    }

    struct Case: Decodable {
        var name: String
        var inputs: [String: StoredTensor]
        var integers: [String: [Int]]
        var outputWeights: StoredTensor
        var output: StoredTensor
        var gradients: [String: StoredTensor]
    }

    struct File: Decodable { var cases: [Case] }

    static let fixtures: [String: Case] = {
        guard let url = Bundle.module.url(forResource: "tensor_ops", withExtension: "json", subdirectory: "Fixtures"),
              let data = try? Data(contentsOf: url),
              let file = try? JSONDecoder().decode(File.self, from: data) else { return [:] }
        return Dictionary(uniqueKeysWithValues: file.cases.map { ($0.name, $0) })
    }()

    /// Runs `chain` on the case's inputs (all trainable) and checks output and gradients.
    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line,
               _ chain: ([String: Tensor], [String: [Int]]) -> Tensor) throws {
        let fixture = try XCTUnwrap(Self.fixtures[name], "fixture \(name) missing: run Scripts/fixtures/tensor_ops.py", file: file, line: line)
        let inputs = fixture.inputs.mapValues { $0.tensor.requiringGradient() }
        let weights = fixture.outputWeights.tensor
        var output: Tensor?
        let (_, gradients) = valueAndGradient(at: inputs) { p in
            let y = chain(p, fixture.integers)
            output = y.detached()
            return (y * weights).sum()
        }
        assertClose(try XCTUnwrap(output), fixture.output.tensor, "\(name) output", file: file, line: line)
        XCTAssertEqual(Set(gradients.keys), Set(fixture.gradients.keys), file: file, line: line)
        for (input, expected) in fixture.gradients {
            guard let actual = gradients[input] else { continue }
            assertClose(actual, expected.tensor, "\(name) gradient of \(input)", file: file, line: line)
        }
    }

    func testConvGroupNormSiLUAttentionLinearCrossEntropy() throws {
        try check("conv_groupnorm_silu_attention_linear_crossentropy") { p, integers in
            var h = p["x"]!.conv2d(filter: p["conv.weight"]!, bias: p["conv.bias"]!, padding: (1, 1))
            h = h.groupNormalized(groups: 2, scale: p["norm.weight"]!, shift: p["norm.bias"]!).silu()
            let tokens = h.reshaped([2, 8, 36]).permuted([0, 2, 1])
            func heads(_ t: Tensor) -> Tensor { t.reshaped([2, 36, 2, 4]).permuted([0, 2, 1, 3]) }
            let q = heads(tokens.matmul(p["q.weight"]!, transposeOther: true))
            let k = heads(tokens.matmul(p["k.weight"]!, transposeOther: true))
            let v = heads(tokens.matmul(p["v.weight"]!, transposeOther: true))
            let a = scaledDotProductAttention(query: q, key: k, value: v)
                .permuted([0, 2, 1, 3]).reshaped([2, 36, 8]).mean(alongAxes: [1])
            let logits = a.matmul(p["head.weight"]!, transposeOther: true) + p["head.bias"]!
            return crossEntropy(logits: logits, labels: integers["labels"]!)
        }
    }

    func testLinearGELULayerNormLogSoftmaxMSE() throws {
        try check("linear_gelu_layernorm_logsoftmax_mse") { p, _ in
            var h = (p["x"]!.matmul(p["fc1.weight"]!, transposeOther: true) + p["fc1.bias"]!).gelu(approximation: .tanh)
            h = h.layerNormalized(scale: p["ln.weight"]!, shift: p["ln.bias"]!)
            h = h.matmul(p["fc2.weight"]!, transposeOther: true).logSoftmax(alongAxis: 1)
            return meanSquaredError(h, p["target"]!)
        }
    }

    func testEmbeddingLayerNormMaskedAttentionGELU() throws {
        try check("embedding_layernorm_masked_attention_gelu") { p, integers in
            let e = p["table"]!.gatheringRows(integers["tokens"]!, indexShape: [2, 5]).layerNormalized()
            let keep = Tensor(shape: [5, 5], scalars: integers["keep"]!.map(Float.init))
            let a = scaledDotProductAttention(query: e, key: e.matmul(p["key.weight"]!, transposeOther: true), value: e, mask: .keep(keep))
            return a.gelu().pow(2).mean(alongAxes: [0, 2])
        }
    }

    func testStridedDilatedGroupedConvPoolUpsampleStatistics() throws {
        try check("strided_dilated_grouped_conv_pool_upsample_stats") { p, _ in
            let h = p["x"]!.conv2d(filter: p["w"]!, stride: (2, 2), padding: (2, 2), dilation: (2, 2), groups: 2).relu()
            let up = h.averagePooled(kernel: (2, 2), stride: (1, 1)).upsampledNearest2x()
            let both = Tensor.concatenate([up.slice(alongAxis: 1, from: 0, step: 2), up.slice(alongAxis: 1, from: 1, to: 3)], alongAxis: 1)
            let stats = Tensor.stack([both.mean(alongAxes: [2, 3]), both.variance(alongAxes: [2, 3], unbiased: true),
                                      both.max(alongAxes: [2, 3])], alongAxis: 2)
            return stats.permuted([2, 0, 1]).softmax(alongAxis: 0)
        }
    }

    func testBroadcastElementwiseAlgebra() throws {
        try check("broadcast_elementwise_algebra") { p, _ in
            let (a, b, c, positive) = (p["a"]!, p["b"]!, p["c"]!, p["positive"]!)
            var h = (a * b + c).tanh() / (1 + b.abs())
            h = h + c.sigmoid().sqrt() * positive.rsqrt()
            h = h - (-h.pow(2)).exp() + a.clamped(min: -0.5, max: 0.5) * positive.log().pow(3)
            return h.relu().sum(alongAxes: [1], keepingDimensions: true) + h.silu().max(alongAxes: [0])
                + h.softmax(alongAxis: 0).variance(alongAxes: [2], keepingDimensions: true, unbiased: true)
        }
    }
}
