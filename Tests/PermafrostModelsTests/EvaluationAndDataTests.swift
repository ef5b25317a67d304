import Foundation
import XCTest
@testable import PermafrostEval
@testable import PermafrostIO
import PermafrostModels
import PermafrostTensor

final class FrechetDistanceTests: XCTestCase {
    struct Fixture: Decodable { var a: [[Double]]; var b: [[Double]]; var fid: Double; var fid_self: Double }

    /// Against scipy.linalg.sqrtm (`Scripts/fixtures/fid_oracle.py`).
    func testMatchesSciPy() throws {
        let f = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: fixtureURL("fid.json")))
        let value = try frechetDistance(FeatureStatistics(rows: f.a), FeatureStatistics(rows: f.b))
        XCTAssertEqual(value, f.fid, accuracy: 1e-6 * max(1, f.fid))
        XCTAssertEqual(try frechetDistance(FeatureStatistics(rows: f.a), FeatureStatistics(rows: f.a)), 0, accuracy: 1e-6)
    }

    func testEigendecompositionReconstructs() throws {
        let m: [Double] = [4, 1, 0.5, 1, 3, 0.2, 0.5, 0.2, 2]
        let (values, vectors) = try symmetricEigen(m, dimension: 3)
        for i in 0..<3 {
            for j in 0..<3 {
                let r = (0..<3).reduce(0.0) { $0 + vectors[$1 * 3 + i] * values[$1] * vectors[$1 * 3 + j] }
                XCTAssertEqual(r, m[i * 3 + j], accuracy: 1e-10)
            }
        }
    }
}

final class DataAndImageTests: XCTestCase {
    func writeIDX(_ url: URL, magic: UInt32, dims: [UInt32], payload: [UInt8], gzip: Bool) throws {
        var bytes: [UInt8] = []
        for word in [magic] + dims { withUnsafeBytes(of: word.bigEndian) { bytes += $0 } }
        bytes += payload
        try Data(bytes).write(to: url)
        if gzip {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["gzip", "-f", url.path]
            try p.run(); p.waitUntilExit()
        }
    }

    func testReadsRawAndGzippedIDXAndRejectsBadFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let pixels = (0..<(3 * 2 * 2)).map { UInt8($0 * 20) }
        try writeIDX(dir.appendingPathComponent("train-images-idx3-ubyte"), magic: 0x803, dims: [3, 2, 2], payload: pixels, gzip: true)
        try writeIDX(dir.appendingPathComponent("train-labels-idx1-ubyte"), magic: 0x801, dims: [3], payload: [7, 1, 7], gzip: false)
        let set = try LabeledImages(directory: dir, split: "train")
        XCTAssertEqual(set.labels, [7, 1, 7])
        XCTAssertEqual(set.pixels, pixels)
        XCTAssertEqual(set.filtered([7]).count, 2)
        let batch = set.batch([1])
        XCTAssertEqual(batch.shape, [1, 1, 2, 2])
        XCTAssertEqual(batch.scalars[0], -1 + 2 * 80 / 255, accuracy: 1e-6)
        // Truncated data, wrong magic, count mismatch: typed errors.
        try writeIDX(dir.appendingPathComponent("bad-images-idx3-ubyte"), magic: 0x803, dims: [5, 2, 2], payload: pixels, gzip: false)
        try writeIDX(dir.appendingPathComponent("bad-labels-idx1-ubyte"), magic: 0x801, dims: [5], payload: [1, 2, 3, 4, 5], gzip: false)
        XCTAssertThrowsError(try LabeledImages(directory: dir, split: "bad")) { error in
            guard case .truncated? = error as? DatasetError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try LabeledImages(images: dir.appendingPathComponent("train-labels-idx1-ubyte"), labels: dir.appendingPathComponent("train-labels-idx1-ubyte"))) { error in
            guard case .badMagic? = error as? DatasetError else { return XCTFail("\(error)") }
        }
        // A corrupt gzip stream.
        var gz = try Data(contentsOf: dir.appendingPathComponent("train-images-idx3-ubyte.gz"))
        gz = gz.prefix(gz.count - 12)
        try gz.write(to: dir.appendingPathComponent("cut-images-idx3-ubyte.gz"))
        try writeIDX(dir.appendingPathComponent("cut-labels-idx1-ubyte"), magic: 0x801, dims: [3], payload: [1, 2, 3], gzip: false)
        XCTAssertThrowsError(try LabeledImages(directory: dir, split: "cut"))
        // A trailer that lies about the uncompressed size (the inflater reserves by it): still a
        // clean error, never a wrong decode or a giant allocation.
        var lying = try Data(contentsOf: dir.appendingPathComponent("train-images-idx3-ubyte.gz"))
        XCTAssertEqual(Compression.gzipSizeHint(lying), 16 + pixels.count)
        lying.replaceSubrange((lying.count - 4)..<lying.count, with: [0xFF, 0xFF, 0xFF, 0x7F])
        try lying.write(to: dir.appendingPathComponent("lie-images-idx3-ubyte.gz"))
        try writeIDX(dir.appendingPathComponent("lie-labels-idx1-ubyte"), magic: 0x801, dims: [3], payload: [1, 2, 3], gzip: false)
        XCTAssertThrowsError(try LabeledImages(directory: dir, split: "lie")) { error in
            guard case .compression? = error as? DatasetError else { return XCTFail("\(error)") }
        }
    }

    /// The disk-backed set streams the IDX files into a temporary file; its batches and labels must
    /// equal the in-memory set's, filtered and relabelled the same way, bit for bit.
    func testDiskBackedImagesEqualTheInMemorySetAndRejectBadFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // 70,000 pixels: more than one 64 KiB inflate piece, so images straddle piece boundaries.
        let (count, size) = (700, 10 * 10)
        var generator = SystemRandomNumberGenerator()
        let pixels = (0..<(count * size)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let labels = (0..<count).map { UInt8($0 % 10) }
        try writeIDX(dir.appendingPathComponent("a-images-idx3-ubyte"), magic: 0x803, dims: [UInt32(count), 10, 10], payload: pixels, gzip: true)
        try writeIDX(dir.appendingPathComponent("a-labels-idx1-ubyte"), magic: 0x801, dims: [UInt32(count)], payload: labels, gzip: false)
        try writeIDX(dir.appendingPathComponent("b-images-idx3-ubyte"), magic: 0x803, dims: [UInt32(count), 10, 10], payload: Array(pixels.reversed()), gzip: false)
        try writeIDX(dir.appendingPathComponent("b-labels-idx1-ubyte"), magic: 0x801, dims: [UInt32(count)], payload: Array(labels.reversed()), gzip: true)

        let disk = try DiskBackedImages([.init(directory: dir, split: "a", slots: [2: 2, 5: 5]),
                                         .init(directory: dir, split: "b", slots: [1: 10, 7: 11])])
        let memory = try LabeledImages(directory: dir, split: "a").filtered([2, 5])
            + LabeledImages(directory: dir, split: "b").filtered([1, 7]).relabeled([1: 10, 7: 11])
        XCTAssertEqual(disk.count, 280)
        XCTAssertEqual(disk.labels, memory.labels)
        XCTAssertEqual([disk.height, disk.width], [10, 10])
        let indices = [279, 0, 140, 139, 3, 3, 200]
        XCTAssertEqual(try disk.batch(indices, range: -1...1).scalars, memory.batch(indices).scalars)
        XCTAssertEqual(try disk.batch(indices, range: 0...1).scalars, memory.batch(indices, range: 0...1).scalars)
        XCTAssertEqual(try disk.batch([], range: -1...1).shape, [0, 1, 10, 10])

        func rejects(_ split: String, _ matches: (DatasetError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try DiskBackedImages([.init(directory: dir, split: split, slots: [1: 1])]), file: file, line: line) { error in
                XCTAssertTrue(matches(error as! DatasetError), "\(error)", file: file, line: line)
                XCTAssertFalse((error as! DatasetError).description.isEmpty)
            }
        }
        // Truncated payload (raw and gzip'd), a gzip stream cut short, wrong magic, count mismatch,
        // images of another size joined to the first part's, a missing file.
        try writeIDX(dir.appendingPathComponent("short-images-idx3-ubyte"), magic: 0x803, dims: [4, 10, 10], payload: Array(pixels.prefix(350)), gzip: false)
        try writeIDX(dir.appendingPathComponent("short-labels-idx1-ubyte"), magic: 0x801, dims: [4], payload: [1, 2, 3, 4], gzip: false)
        rejects("short") { if case .truncated(_, 400, 350) = $0 { return true }; return false }
        try writeIDX(dir.appendingPathComponent("shortgz-images-idx3-ubyte"), magic: 0x803, dims: [4, 10, 10], payload: Array(pixels.prefix(350)), gzip: true)
        try writeIDX(dir.appendingPathComponent("shortgz-labels-idx1-ubyte"), magic: 0x801, dims: [4], payload: [1, 2, 3, 4], gzip: false)
        rejects("shortgz") { if case .truncated = $0 { return true }; return false }
        let gz = try Data(contentsOf: dir.appendingPathComponent("a-images-idx3-ubyte.gz"))
        try gz.prefix(gz.count / 2).write(to: dir.appendingPathComponent("cut-images-idx3-ubyte.gz"))
        try writeIDX(dir.appendingPathComponent("cut-labels-idx1-ubyte"), magic: 0x801, dims: [UInt32(count)], payload: labels, gzip: false)
        rejects("cut") { if case .compression = $0 { return true }; return false }
        try writeIDX(dir.appendingPathComponent("magic-images-idx3-ubyte"), magic: 0x801, dims: [4, 10, 10], payload: Array(pixels.prefix(400)), gzip: false)
        try writeIDX(dir.appendingPathComponent("magic-labels-idx1-ubyte"), magic: 0x801, dims: [4], payload: [1, 2, 3, 4], gzip: false)
        rejects("magic") { if case .badMagic = $0 { return true }; return false }
        try writeIDX(dir.appendingPathComponent("count-images-idx3-ubyte"), magic: 0x803, dims: [4, 10, 10], payload: Array(pixels.prefix(400)), gzip: false)
        try writeIDX(dir.appendingPathComponent("count-labels-idx1-ubyte"), magic: 0x801, dims: [3], payload: [1, 2, 3], gzip: false)
        rejects("count") { $0 == .countMismatch(images: 4, labels: 3) }
        rejects("missing") { if case .notFound = $0 { return true }; return false }
        try writeIDX(dir.appendingPathComponent("small-images-idx3-ubyte"), magic: 0x803, dims: [4, 5, 5], payload: Array(pixels.prefix(100)), gzip: false)
        try writeIDX(dir.appendingPathComponent("small-labels-idx1-ubyte"), magic: 0x801, dims: [4], payload: [1, 2, 3, 4], gzip: false)
        XCTAssertThrowsError(try DiskBackedImages([.init(directory: dir, split: "a", slots: [1: 1]), .init(directory: dir, split: "small", slots: [1: 1])])) { error in
            guard case .invalidShape? = error as? DatasetError else { return XCTFail("\(error)") }
        }
        // A temporary folder that does not exist: a clear error, not a crash.
        XCTAssertThrowsError(try DiskBackedImages([.init(directory: dir, split: "a", slots: [1: 1])], temporaryDirectory: dir.appendingPathComponent("nowhere"))) { error in
            guard case .temporaryFile? = error as? DatasetError else { return XCTFail("\(error)") }
        }
    }

    /// Inflating piece by piece yields the same bytes as inflating whole, and stops at the limit.
    func testStreamedInflateEqualsWholeInflate() throws {
        let payload: [UInt8] = (0..<300_000).map { (i: Int) -> UInt8 in UInt8(truncatingIfNeeded: (i * 7 + i / 1000) % 251) }
        let compressed = Data(Compression.deflate(payload))
        var pieces: [UInt8] = [], calls = 0
        try Compression.inflate(compressed) { pieces += $0; calls += 1; return true }
        XCTAssertEqual(pieces, payload)
        XCTAssertGreaterThan(calls, 2)
        XCTAssertEqual([UInt8](try Compression.inflate(compressed)), payload)
        XCTAssertThrowsError(try Compression.inflate(compressed, limit: 100_000) { _ in true }) { error in
            XCTAssertEqual(error as? Compression.Failure, .tooLarge(limit: 100_000))
        }
        // A consumer that stops early ends the stream without an error.
        var seen = 0
        try Compression.inflate(compressed) { seen += $0.count; return false }
        XCTAssertEqual(seen, 1 << 16)
    }

    func testShippedDataIsComplete() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Data")
        let train = try LabeledImages(directory: root.appendingPathComponent("mnist"), split: "train")
        XCTAssertEqual(train.count, 20_000)
        XCTAssertEqual(Array(train.labels.prefix(5)), [5, 0, 4, 1, 9])
        let fashion = try LabeledImages(directory: root.appendingPathComponent("fashion-mnist"), split: "t10k")
        XCTAssertEqual(Set(fashion.labels), [1, 7, 8])
        // Classifying a set batch by batch from its bytes agrees with classifying one Float tensor of
        // it in other batch sizes (every layer works per image).
        let classifier = ImageClassifier(classes: 13, seed: 5)
        let fromBytes = classifier.predict(fashion, batch: 64)
        XCTAssertEqual(fromBytes, classifier.predict(fashion.batch(Array(0..<fashion.count)), batch: 250))
        XCTAssertGreaterThan(Set(fromBytes).count, 1)
        XCTAssertEqual(classifier.accuracy(on: fashion), Double(zip(fromBytes, fashion.labels).filter { $0 == $1 }.count) / Double(fashion.count))
        // The same set read from disk a batch at a time: the same predictions and accuracy.
        let onDisk = try DiskBackedImages([.init(directory: root.appendingPathComponent("fashion-mnist"), split: "t10k", slots: [1: 1, 7: 7, 8: 8])])
        XCTAssertEqual(onDisk.labels, fashion.labels)
        XCTAssertEqual(try classifier.predict(onDisk, batch: 64), fromBytes)
        XCTAssertEqual(try classifier.accuracy(on: onDisk), classifier.accuracy(on: fashion))
    }

    func testPNGIsWellFormed() throws {
        let png = PNG.encode(width: 3, height: 2, channels: 1, pixels: [0, 50, 100, 150, 200, 250])
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // IHDR: width 3, height 2, depth 8, grayscale.
        XCTAssertEqual(Array(png[16..<24]), [0, 0, 0, 3, 0, 0, 0, 2])
        XCTAssertEqual(png[24], 8)
        // The IDAT payload inflates back to the filtered rows.
        let idatLength = Int(png[33..<37].reduce(0) { $0 << 8 | UInt32($1) })
        let payload = png[41..<(41 + idatLength)]
        XCTAssertEqual([UInt8](try Compression.inflate(Data(payload))), [0, 0, 50, 100, 0, 150, 200, 250])
        XCTAssertEqual(Compression.crc32(Array("IEND".utf8)), 0xAE42_6082)
    }
}

final class ConfidenceScoringTests: XCTestCase {
    func testConfidenceIsTheSoftmaxMaximumAndTheThresholdOnlyRemovesSamples() throws {
        let classifier = ImageClassifier(classes: 13, seed: 3)
        var g = PhiloxGenerator(seed: 8)
        let images = Tensor(randomUniform: [40, 1, 28, 28], lower: -1, upper: 1, generator: &g)
        let scored = classifier.predictWithConfidence(images, batch: 16)
        XCTAssertEqual(scored.map(\.label), classifier.predict(images))
        // The probability of the top class, from the logits in Double.
        let logits = GradientRecording.withoutRecording { classifier.logits(images) }.scalars
        for (i, entry) in scored.enumerated() {
            let row = logits[(i * 13)..<((i + 1) * 13)].map(Double.init)
            let top = row.max()!
            let expected = 1 / row.map { exp($0 - top) }.reduce(0, +)
            XCTAssertEqual(Double(entry.confidence), expected, accuracy: 1e-5)
        }
        // Requested: each image's own top class for the first half, another class for the rest.
        let requested = scored.enumerated().map { $0.offset < 20 ? $0.element.label : ($0.element.label + 1) % 13 }
        let plain = try SampleEvaluation(classifier: classifier, images: images, requested: requested, real: images)
        XCTAssertEqual(plain.quality.recognitionRate, 0.5)
        let median = scored.prefix(20).map(\.confidence).sorted()[10]
        let strict = try SampleEvaluation(classifier: classifier, images: images, requested: requested, real: images, minimumConfidence: median)
        XCTAssertEqual(strict.quality.recognitionRate, Double(scored.prefix(20).filter { $0.confidence >= median }.count) / 40)
        XCTAssertLessThan(strict.quality.recognitionRate, plain.quality.recognitionRate)
        let none = try SampleEvaluation(classifier: classifier, images: images, requested: requested, real: images, minimumConfidence: 1.01)
        XCTAssertEqual(none.quality.recognitionRate, 0)
        XCTAssertEqual(none.quality.fid, plain.quality.fid, "the threshold changes the rate, not the FID")
    }
}

final class NoneOfTheseTests: XCTestCase {
    func testNoneOfTheseImagesAreSeededVariedAndLabelled() {
        var g = PhiloxGenerator(seed: 2)
        let source = LabeledImages(pixels: (0..<(5 * 784)).map { _ in UInt8(g.nextUInt32() % 256) }, labels: [0, 1, 2, 3, 4], height: 28, width: 28)
        let a = NoneOfTheseImages.make(count: 30, label: 13, shuffling: source, seed: 4)
        XCTAssertEqual(a.labels, Array(repeating: 13, count: 30))
        XCTAssertEqual(a.pixels, NoneOfTheseImages.make(count: 30, label: 13, shuffling: source, seed: 4).pixels)
        XCTAssertNotEqual(a.pixels, NoneOfTheseImages.make(count: 30, label: 13, shuffling: source, seed: 5).pixels)
        // Every image is different and none is blank.
        let images = (0..<30).map { Array(a.pixels[($0 * 784)..<(($0 + 1) * 784)]) }
        XCTAssertEqual(Set(images).count, 30)
        XCTAssertTrue(images.allSatisfy { Set($0).count > 4 })
        // A shuffled image holds exactly the pixels of one source image, rearranged.
        let shuffled = images[2].sorted()
        XCTAssertTrue((0..<5).contains { shuffled == Array(source.pixels[($0 * 784)..<(($0 + 1) * 784)]).sorted() })
    }

    func testNoneClassIsSavedAndCountedAndExpectationsMapSlots() throws {
        let classifier = ImageClassifier(classes: 14, seed: 3)
        classifier.noneClass = 13
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("none-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try classifier.save(to: url)
        let loaded = try ImageClassifier.load(from: url)
        XCTAssertEqual(loaded.noneClass, 13)
        XCTAssertNil(try { () throws -> Int? in
            let plain = ImageClassifier(classes: 13); try plain.save(to: url); return try ImageClassifier.load(from: url).noneClass
        }())

        var g = PhiloxGenerator(seed: 8)
        let images = Tensor(randomUniform: [28, 1, 28, 28], lower: -1, upper: 1, generator: &g)
        let predicted = classifier.predict(images)
        // Slots 20 and 21 "should show" the classes the classifier gives the first and second halves.
        let requested = (0..<28).map { $0 < 14 ? 20 : 21 }
        let first = predicted[0], second = predicted[14]
        let evaluation = try SampleEvaluation(classifier: classifier, images: images, requested: requested, expected: [20: first, 21: second], real: images)
        XCTAssertEqual(evaluation.perClass[20], Double(predicted.prefix(14).filter { $0 == first }.count) / 14)
        XCTAssertEqual(evaluation.perClass[21], Double(predicted.suffix(14).filter { $0 == second }.count) / 14)
        XCTAssertEqual(evaluation.noneRate, Double(predicted.filter { $0 == 13 }.count) / 28)
        XCTAssertEqual(evaluation.nonePerClass?[20], Double(predicted.prefix(14).filter { $0 == 13 }.count) / 14)
        XCTAssertTrue(try evaluation.json().contains("\"none_rate\""))

        XCTAssertEqual(try LabeledImages.labelMapping("6:10, 13:11"), [6: 10, 13: 11])
        XCTAssertEqual(try LabeledImages.labelMapping(""), [:])
        for bad in ["6", "6:x", "6:10,6:11", "-1:3"] {
            XCTAssertThrowsError(try LabeledImages.labelMapping(bad), bad) { XCTAssertTrue("\($0)".contains("FROM:TO"), "\($0)") }
        }
    }
}
