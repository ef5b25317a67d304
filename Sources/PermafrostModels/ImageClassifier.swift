import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// The evaluation classifier: a small CNN for 28×28 grayscale images. Its 128-dimensional
/// penultimate layer is the feature space of Permafrost's FID.
///
/// conv 1→32 (3×3) · ReLU · conv 32→32 stride 2 · ReLU · conv 32→64 · ReLU · conv 64→64 stride 2 ·
/// ReLU · flatten · linear 3136→128 · ReLU (features) · linear 128→classes.
public final class ImageClassifier: Module {
    public let classes: Int
    /// The class that means "none of these" (trained on ``NoneOfTheseImages``), if the classifier has one:
    /// a sample it gets is recognised as nothing.
    public var noneClass: Int?
    let body: Sequential
    let head: Linear

    public init(classes: Int, seed: UInt64 = 0) {
        precondition(classes > 1, "a classifier needs at least 2 classes")
        var g = PhiloxGenerator(seed: seed)
        self.classes = classes
        body = Sequential([
            Conv2d(1, 32, kernelSize: 3, padding: 1, generator: &g), ReLU(),
            Conv2d(32, 32, kernelSize: 3, stride: 2, padding: 1, generator: &g), ReLU(),
            Conv2d(32, 64, kernelSize: 3, padding: 1, generator: &g), ReLU(),
            Conv2d(64, 64, kernelSize: 3, stride: 2, padding: 1, generator: &g), ReLU(),
            Flatten(), Linear(64 * 7 * 7, 128, generator: &g), ReLU(),
        ])
        head = Linear(128, classes, generator: &g)
        // The four convolutions run 8 images at a time in training: their Float32 outputs (conv1's
        // [n, 32, 28, 28] is 6.1 MiB at 64 images) then exist only while the next layer reads
        // them, and their input gradients are a chunk's. Under freezing a consumer keeps nothing of
        // an output (frozen) or an 8-bit copy, so this halves a SlimFit step's peak (measured on AMD EPYC:
        // 16.7 -> 9.2 MiB); full fine-tuning keeps every input whole for its weight gradient, and
        // gains only the smaller input gradients (22.3 -> 19.9 MiB).
        body.leadingChunks = (leadingLayers: 8, rowsPerChunk: 8)
        super.init()
        register("body", body)
        register("head", head)
    }

    /// Penultimate features (`[n, 128]`) of `[n, 1, 28, 28]` images in [−1, 1].
    public func features(_ images: Tensor) -> Tensor {
        precondition(images.rank == 4 && Array(images.shape[1...]) == [1, 28, 28], "the classifier takes [n, 1, 28, 28], got \(images.shape)")
        return body(images)
    }

    public func logits(_ images: Tensor) -> Tensor { head(features(images)) }

    /// Predicted classes, in batches (no autodiff).
    public func predict(_ images: Tensor, batch: Int = 64) -> [Int] {
        predict(count: images.shape[0], batch: batch) { images.slice(alongAxis: 0, from: $0.lowerBound, to: $0.upperBound) }
    }

    /// Predicted classes of a labelled image set (in memory, or read from disk a batch at a time),
    /// each batch converted from its bytes when it is classified: the set is never held as one
    /// Float tensor (4 bytes a pixel, where the set keeps 1).
    public func predict<Source: LabeledImageSource>(_ data: Source, batch: Int = 64) throws(Source.BatchFailure) -> [Int] {
        try predict(count: data.count, batch: batch) { (range) throws(Source.BatchFailure) in try data.batch(Array(range), range: -1...1) }
    }

    /// Predicted classes with the classifier's probability for each (the softmax of its logits), in
    /// batches (no autodiff): a caller that must not count noise as a class can ask for confidence.
    public func predictWithConfidence(_ images: Tensor, batch: Int = 64) -> [(label: Int, confidence: Float)] {
        precondition(batch > 0, "the prediction batch must be positive, got \(batch)")
        var result: [(label: Int, confidence: Float)] = []
        for start in stride(from: 0, to: images.shape[0], by: batch) {
            let end = Swift.min(images.shape[0], start + batch)
            let input = images.slice(alongAxis: 0, from: start, to: end)
            let probabilities = GradientRecording.withoutRecording { logits(input).softmax(alongAxis: -1) }
            probabilities.withUnsafeBufferPointer { p in
                for row in 0..<(end - start) {
                    let values = p[(row * classes)..<((row + 1) * classes)]
                    let best = values.indices.max { values[$0] < values[$1] } ?? row * classes
                    result.append((best - row * classes, values[best]))
                }
            }
        }
        return result
    }

    /// Accuracy on a labelled image set, in [0, 1].
    public func accuracy<Source: LabeledImageSource>(on data: Source, batch: Int = 64) throws(Source.BatchFailure) -> Double {
        let predicted = try predict(data, batch: batch)
        return Double(zip(predicted, data.labels).filter { $0 == $1 }.count) / Double(Swift.max(data.count, 1))
    }

    /// Inference keeps one batch's activations at a time, so the batch bounds its memory: at 64
    /// images the largest (the first convolution's output) is 6 MiB.
    private func predict<Failure: Error>(count: Int, batch: Int, images: (Range<Int>) throws(Failure) -> Tensor) throws(Failure) -> [Int] {
        precondition(batch > 0, "the prediction batch must be positive, got \(batch)")
        var result: [Int] = []
        result.reserveCapacity(count)
        for start in stride(from: 0, to: count, by: batch) {
            let end = Swift.min(count, start + batch)
            let input = try images(start..<end)
            result += rowArgmax(GradientRecording.withoutRecording { logits(input) })
        }
        return result
    }

    /// Features of many images, in batches (no autodiff), as `[n][128]` Doubles.
    public func featureRows(_ images: Tensor, batch: Int = 256) -> [[Double]] {
        GradientRecording.withoutRecording {
            var rows: [[Double]] = []
            for start in stride(from: 0, to: images.shape[0], by: batch) {
                let end = Swift.min(images.shape[0], start + batch)
                let f = features(images.slice(alongAxis: 0, from: start, to: end))
                let width = f.shape[1]
                f.withUnsafeBufferPointer { p in
                    for row in 0..<(end - start) { rows.append(p[(row * width)..<((row + 1) * width)].map(Double.init)) }
                }
            }
            return rows
        }
    }

    /// Saves weights (safetensors, with the class count in the metadata).
    public func save(to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        var metadata = ["permafrost.model": "ImageClassifier", "classes": String(classes)]
        if let noneClass { metadata["none_class"] = String(noneClass) }
        try save(to: url, metadata: metadata)
    }

    /// Loads a classifier saved by ``save(to:)``.
    public static func load(from url: URL) throws -> ImageClassifier {
        let file = try SafetensorsFile(contentsOf: url)
        guard let text = file.metadata["classes"], let classes = Int(text), classes > 1 else {
            throw ModelConfigError.invalidField(name: "classes", reason: "'\(url.path)' is not an ImageClassifier checkpoint (no class count in its metadata)")
        }
        let model = ImageClassifier(classes: classes)
        if let text = file.metadata["none_class"] {
            guard let none = Int(text), (0..<classes).contains(none) else {
                throw ModelConfigError.invalidField(name: "none_class", reason: "'\(text)' in '\(url.path)' is not one of its \(classes) classes")
            }
            model.noneClass = none
        }
        try model.load(from: file)
        return model
    }
}
