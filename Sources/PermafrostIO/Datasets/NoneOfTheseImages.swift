import PermafrostTensor

/// Images that show none of the shipped classes: the training set of a classifier's "none of these"
/// class.
///
/// Why: a classifier without such a class must place every image in some class, and a generator
/// that draws noise is then scored as drawing whatever class noise resembles (the shipped 13-class
/// classifier calls it "bag"). Three kinds, a third each, all deterministic in `seed`:
/// - smoothed noise: Gaussian noise, box-blurred 0–5 times with radius 1–3, rescaled to a random
///   contrast around a random (often dark) background — blotches and textures at every scale;
/// - textured blobs: one to four random ellipses filled with smoothed noise on a dark background —
///   large bright regions with no outline of a digit or garment;
/// - shuffled real images: an image of `source` cut into 7×7 patches put back in a random order —
///   real strokes and fabric, no whole digit or garment.
public enum NoneOfTheseImages {
    /// `set` with a "none of these" class of `label` as large as an average class of it (labels 0..<label), drawn from its own images.
    public static func adding(to set: LabeledImages, label: Int, seed: UInt64) -> LabeledImages {
        set + make(count: set.count / Swift.max(label, 1), label: label, shuffling: set, seed: seed)
    }

    public static func make(count: Int, label: Int, shuffling source: LabeledImages, seed: UInt64) -> LabeledImages {
        precondition(source.height == 28 && source.width == 28 && source.count > 0, "the shuffled images come from 28×28 images")
        var pixels = [UInt8](repeating: 0, count: count * 784)
        for index in 0..<count {
            var generator = PhiloxGenerator(seed: seed, stream: UInt64(index))
            let image: [UInt8]
            switch index % 3 {
            case 0: image = smoothedNoise(&generator)
            case 1: image = texturedBlobs(&generator)
            default: image = shuffledPatches(of: source, &generator)
            }
            pixels.replaceSubrange((index * 784)..<((index + 1) * 784), with: image)
        }
        return LabeledImages(pixels: pixels, labels: Array(repeating: label, count: count), height: 28, width: 28)
    }

    static func smoothedNoise(_ generator: inout PhiloxGenerator) -> [UInt8] {
        let field = smoothedField(&generator)
        let (mean, deviation) = moments(field)
        let background = -120 + 220 * generator.nextUnitFloat(), contrast = 40 + 120 * generator.nextUnitFloat()
        return field.map { UInt8(Swift.min(Swift.max(background + contrast * ($0 - mean) / deviation, 0), 255)) }
    }

    /// Gaussian noise box-blurred 0–5 times with radius 1–3.
    static func smoothedField(_ generator: inout PhiloxGenerator) -> [Float] {
        var field = (0..<784).map { _ in generator.nextNormal() }
        let passes = Int(generator.nextUInt32() % 6), radius = 1 + Int(generator.nextUInt32() % 3)
        for _ in 0..<passes { field = boxBlur(field, radius: radius) }
        return field
    }

    static func texturedBlobs(_ generator: inout PhiloxGenerator) -> [UInt8] {
        let texture = smoothedField(&generator)
        let (mean, deviation) = moments(texture)
        var out = [Float](repeating: 0, count: 784)
        for _ in 0...(generator.nextUInt32() % 4) {
            let (cy, cx) = (4 + 20 * generator.nextUnitFloat(), 4 + 20 * generator.nextUnitFloat())
            let (ry, rx) = (3 + 9 * generator.nextUnitFloat(), 3 + 9 * generator.nextUnitFloat())
            let brightness = 80 + 140 * generator.nextUnitFloat(), contrast = 20 + 80 * generator.nextUnitFloat()
            for y in 0..<28 {
                for x in 0..<28 {
                    let (dy, dx) = ((Float(y) - cy) / ry, (Float(x) - cx) / rx)
                    if dy * dy + dx * dx <= 1 { out[y * 28 + x] = Swift.max(out[y * 28 + x], brightness + contrast * (texture[y * 28 + x] - mean) / deviation) }
                }
            }
        }
        return out.map { UInt8(Swift.min(Swift.max($0, 0), 255)) }
    }

    /// Mean and standard deviation (at least 1e-6) of a 28×28 field.
    static func moments(_ field: [Float]) -> (mean: Float, deviation: Float) {
        let mean = field.reduce(0, +) / 784
        return (mean, Swift.max((field.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 784).squareRoot(), 1e-6))
    }

    static func boxBlur(_ field: [Float], radius: Int) -> [Float] {
        var out = [Float](repeating: 0, count: 784)
        for y in 0..<28 {
            for x in 0..<28 {
                var sum: Float = 0, n: Float = 0
                for dy in -radius...radius where (0..<28).contains(y + dy) {
                    for dx in -radius...radius where (0..<28).contains(x + dx) { sum += field[(y + dy) * 28 + x + dx]; n += 1 }
                }
                out[y * 28 + x] = sum / n
            }
        }
        return out
    }

    static func shuffledPatches(of source: LabeledImages, _ generator: inout PhiloxGenerator) -> [UInt8] {
        let image = Int(generator.nextUInt32() % UInt32(source.count))
        let original = Array(source.pixels[(image * 784)..<((image + 1) * 784)])
        var order = Array(0..<16)
        order.shuffle(using: &generator)
        var out = [UInt8](repeating: 0, count: 784)
        for (target, from) in order.enumerated() {
            let (ty, tx, fy, fx) = (target / 4 * 7, target % 4 * 7, from / 4 * 7, from % 4 * 7)
            for row in 0..<7 { for column in 0..<7 { out[(ty + row) * 28 + tx + column] = original[(fy + row) * 28 + fx + column] } }
        }
        return out
    }
}
