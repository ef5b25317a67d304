import Foundation
import XCTest
import PermafrostFederated
import PermafrostIO
import PermafrostNN
import PermafrostTensor

final class FederatedTests: XCTestCase {
    /// FedSVD's server step keeps B·A and gives A orthonormal rows (Linear- and Conv-shaped factors).
    func testRefactorizationKeepsTheProductAndOrthonormalisesA() throws {
        var g = PhiloxGenerator(seed: 5)
        for (bShape, aShape) in [([16, 4], [4, 20]), ([8, 4, 1, 1], [4, 3, 3, 3])] {
            let b = Tensor(randomNormal: bShape, generator: &g), a = Tensor(randomNormal: aShape, generator: &g)
            let (newB, newA) = try FedSVD.refactorize(b: b, a: a)
            XCTAssertEqual(newB.shape, bShape); XCTAssertEqual(newA.shape, aShape)
            let rank = aShape[0], inputs = a.count / rank, out = bShape[0]
            func product(_ b: Tensor, _ a: Tensor) -> [Double] {
                (0..<(out * inputs)).map { index in
                    (0..<rank).reduce(0.0) { $0 + Double(b.scalars[(index / inputs) * rank + $1]) * Double(a.scalars[$1 * inputs + index % inputs]) }
                }
            }
            let before = product(b, a), after = product(newB, newA)
            let scale = before.map(abs).max()!
            XCTAssertLessThanOrEqual(zip(before, after).map { abs($0 - $1) }.max()! / scale, 1e-5, "B·A changed")
            for i in 0..<rank {
                for j in 0..<rank {
                    let dot = (0..<inputs).reduce(0.0) { $0 + Double(newA.scalars[i * inputs + $1]) * Double(newA.scalars[j * inputs + $1]) }
                    XCTAssertEqual(dot, i == j ? 1 : 0, accuracy: 1e-5, "rows \(i), \(j) of the new A")
                }
            }
        }
    }

    /// Rényi DP of the subsampled Gaussian and ε at δ, against Opacus (`Scripts/fixtures/federated_oracle.py`).
    func testAccountantMatchesOpacus() throws {
        let url = Bundle.module.url(forResource: "Fixtures/rdp", withExtension: "json")!
        let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [[String: Any]]
        XCTAssertEqual(cases.count, 5)
        for entry in cases {
            let q = entry["q"] as! Double, sigma = entry["sigma"] as! Double, steps = entry["steps"] as! Int
            let orders = entry["orders"] as! [Int], rdp = entry["rdp"] as! [Double]
            XCTAssertEqual(orders, PrivacyAccountant.orders)
            for (order, expected) in zip(orders, rdp) {
                let ours = Double(steps) * PrivacyAccountant.renyiDivergence(samplingRate: q, noiseMultiplier: sigma, order: order)
                XCTAssertEqual(ours, expected, accuracy: max(abs(expected), 1e-12) * 1e-6, "q \(q), σ \(sigma), order \(order)")
            }
            let epsilon = PrivacyAccountant.epsilon(samplingRate: q, noiseMultiplier: sigma, steps: steps, delta: entry["delta"] as! Double)
            XCTAssertEqual(epsilon, entry["epsilon"] as! Double, accuracy: (entry["epsilon"] as! Double) * 1e-6)
        }
    }

    func randomImages(_ count: Int, seed: UInt64) -> LabeledImages {
        var g = PhiloxGenerator(seed: seed)
        return LabeledImages(pixels: (0..<(count * 784)).map { _ in UInt8(g.nextUInt32() % 256) }, labels: (0..<count).map { $0 % 10 }, height: 28, width: 28)
    }

    /// In FedSVD and frozen-A, clients compute no gradient for A (no weight-gradient kernel runs for it)
    /// and send only B; in FedAvg-LoRA they compute and send both. No base weight ever gets a gradient.
    func testFedSVDClientsNeverComputeOrSendAGradientForA() throws {
        let data = randomImages(200, seed: 1)
        let base = try FederatedLoRA.pretrainedBase(data: data, steps: 2, seed: 0)
        var settings = FederatedLoRA.Settings()
        (settings.clients, settings.rounds, settings.localSteps, settings.batch, settings.rank) = (1, 1, 1, 8, 4)
        let bValues = 256 * 4 + 256 * 4 + 10 * 4, aValues = 4 * 784 + 4 * 256 + 4 * 256
        for (method, expectedGradients, expectedUpload) in [(FederatedLoRA.Method.fedSVD, 3, bValues), (.frozenA, 3, bValues), (.fedAvgLoRA, 6, aValues + bValues)] {
            let (result, statistics) = try KernelCounters.measure { try FederatedLoRA.run(method, base: base, train: data, test: data, settings: settings) }
            XCTAssertEqual(statistics.gemms(.weightGradient).count, expectedGradients, "\(method): weight-gradient kernels \(statistics.gemms(.weightGradient))")
            XCTAssert(statistics.gemms(.weightGradient).allSatisfy { $0.m == 4 || $0.n == 4 }, "\(method): only rank-4 adapter factors get gradients")
            XCTAssertEqual(result.uploadedParameters, expectedUpload, "\(method): values a client sends")
        }
    }

    /// DP-SGD clips every example's gradient: with no noise the mean gradient's norm is at most the clip norm.
    func testDPSGDClipsEveryExample() throws {
        var g = PhiloxGenerator(seed: 2)
        let model = Sequential([Linear(6, 4, generator: &g), ReLU(), Linear(4, 3, generator: &g)])
        let x = Tensor(randomNormal: [5, 6], generator: &g) * 30
        let settings = DPSGDSettings(clipNorm: 0.01, noiseMultiplier: 0)
        var noise = PhiloxGenerator(seed: 3)
        let gradients = settings.gradients(model, examples: 5, generator: &noise) { i in
            crossEntropy(logits: model(Tensor(shape: [1, 6], scalars: Array(x.scalars[(i * 6)..<((i + 1) * 6)]))), labels: [i % 3])
        }
        let norm = gradients.values.reduce(Float(0)) { $0 + $1.scalars.reduce(0) { $0 + $1 * $1 } }.squareRoot()
        XCTAssertGreaterThan(norm, 0)
        XCTAssertLessThanOrEqual(norm, 0.01 * 1.0001)
        var first = PhiloxGenerator(seed: 4), second = PhiloxGenerator(seed: 4)
        let noisy = DPSGDSettings(clipNorm: 1, noiseMultiplier: 1)
        let loss = { (i: Int) in crossEntropy(logits: model(Tensor(shape: [1, 6], scalars: Array(x.scalars[(i * 6)..<((i + 1) * 6)]))), labels: [0]) }
        XCTAssertEqual(noisy.gradients(model, examples: 5, generator: &first, exampleLoss: loss)["0.weight"]!.scalars,
                       noisy.gradients(model, examples: 5, generator: &second, exampleLoss: loss)["0.weight"]!.scalars, "seeded noise")
    }
}
