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
