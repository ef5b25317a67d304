import Foundation
import PermafrostModels
import PermafrostTensor

/// What the evaluation classifier says about generated images.
public struct GenerationQuality: Sendable, Codable, Equatable {
    /// Fraction of images classified as the class they were generated for.
    public var recognitionRate: Double
    /// Fréchet distance between real and generated images in the classifier's feature space.
    public var fid: Double?
    public var samples: Int
}

public enum QualityEvaluation {
    /// Fraction of `images` the classifier assigns to `requested` (same order).
    public static func recognitionRate(classifier: ImageClassifier, images: Tensor, requested: [Int]) -> Double {
        precondition(images.shape[0] == requested.count, "\(images.shape[0]) images for \(requested.count) requested classes")
        let predicted = classifier.predict(images)
        return Double(zip(predicted, requested).filter { $0 == $1 }.count) / Double(Swift.max(requested.count, 1))
    }

    /// Recognition rate and FID (against `real`, same classes) of `generated`.
    public static func evaluate(classifier: ImageClassifier, generated: Tensor, requested: [Int], real: Tensor) throws -> GenerationQuality {
        let rate = recognitionRate(classifier: classifier, images: generated, requested: requested)
        let fid = try frechetDistance(FeatureStatistics(rows: classifier.featureRows(real)),
                                      FeatureStatistics(rows: classifier.featureRows(generated)))
        return GenerationQuality(recognitionRate: rate, fid: fid, samples: requested.count)
    }
}

/// Samples of a diffusion model scored by the evaluation classifier: overall and per class.
public struct SampleEvaluation: Sendable {
    public var quality: GenerationQuality
    /// Recognition rate of each requested slot's samples.
    public var perClass: [Int: Double]
    /// With a classifier that has a "none of these" class: the share of each requested slot's samples
    /// it put there (recognised as nothing); nil otherwise.
    public var nonePerClass: [Int: Double]?
    /// The share of all samples in the "none of these" class; nil without one.
    public var noneRate: Double?

    /// Scores `images`, generated for `requested` slots (same order), against the real images `real`
    /// (nil: no FID, the recognition rates only).
    ///
    /// `expected` maps a slot to the class its samples should show when that differs from the slot
    /// (content taught under another label, e.g. trousers under slot 6: `[6: 10]`).
    /// With `minimumConfidence` above 0 a sample counts only when the classifier gives its expected
    /// class at least that probability: a classifier without a "none of these" class must place
    /// pure noise somewhere (the shipped 13-class one calls it "bag"), and the threshold keeps some of that
    /// out of the rate; a classifier with one (``ImageClassifier/noneClass``) says so itself.
    public init(classifier: ImageClassifier, images: Tensor, requested: [Int], expected: [Int: Int] = [:], real: Tensor?,
                minimumConfidence: Float = 0) throws {
        let wanted = requested.map { expected[$0] ?? $0 }
        quality = try real.map { try QualityEvaluation.evaluate(classifier: classifier, generated: images, requested: wanted, real: $0) }
            ?? GenerationQuality(recognitionRate: 0, fid: nil, samples: requested.count)
        let predicted = classifier.predictWithConfidence(images)
        let recognised = requested.indices.map { predicted[$0].label == wanted[$0] && predicted[$0].confidence >= minimumConfidence }
        var perClass: [Int: Double] = [:], nonePerClass: [Int: Double] = [:]
        for slot in Set(requested) {
            let indices = requested.indices.filter { requested[$0] == slot }
            perClass[slot] = Double(indices.filter { recognised[$0] }.count) / Double(indices.count)
            if let none = classifier.noneClass {
                nonePerClass[slot] = Double(indices.filter { predicted[$0].label == none }.count) / Double(indices.count)
            }
        }
        self.perClass = perClass
        quality.recognitionRate = Double(recognised.filter { $0 }.count) / Double(Swift.max(requested.count, 1))
        if let none = classifier.noneClass {
            self.nonePerClass = nonePerClass
            noneRate = Double(predicted.filter { $0.label == none }.count) / Double(Swift.max(requested.count, 1))
        }
    }

    /// One JSON object: `recognition_rate`, `fid`, `samples` and `per_class` (slot → rate); with a
    /// "none of these" class also `none_rate` and `none_per_class`.
    public func json() throws -> String {
        var object: [String: Any] = ["recognition_rate": quality.recognitionRate, "fid": quality.fid ?? NSNull(), "samples": quality.samples,
                                     "per_class": Dictionary(uniqueKeysWithValues: perClass.map { (String($0.key), $0.value) })]
        if let noneRate, let nonePerClass {
            object["none_rate"] = noneRate
            object["none_per_class"] = Dictionary(uniqueKeysWithValues: nonePerClass.map { (String($0.key), $0.value) })
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// The overall rate and FID, then one line per slot in `slots`' order.
    public func summary(slots: [Int], realImages: Int) -> String {
        ([String(format: "recognition rate %.1f%% over %d samples, FID %.3f (classifier features, vs %d real test images)",
                 quality.recognitionRate * 100, quality.samples, quality.fid ?? .nan, realImages)]
         + slots.map { slot in
             String(format: "  class %2d: %.1f%%", slot, (perClass[slot] ?? 0) * 100)
                 + (nonePerClass.map { String(format: " (none of these: %.1f%%)", ($0[slot] ?? 0) * 100) } ?? "")
         }).joined(separator: "\n")
    }

    /// The first `count` samples of each slot in `slots`, in order (for a picture grid).
    public static func firstSamples(of images: Tensor, requested: [Int], slots: [Int], count: Int) -> Tensor {
        let firsts = slots.flatMap { slot in requested.indices.filter { requested[$0] == slot }.prefix(count) }
        return Tensor.concatenate(firsts.map { images.slice(alongAxis: 0, from: $0, to: $0 + 1) }, alongAxis: 0)
    }
}
