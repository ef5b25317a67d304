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
