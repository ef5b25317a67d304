import Foundation
import XCTest
@testable import PermafrostIO
import PermafrostTensor

final class SafetensorsInteropTests: XCTestCase {
    struct Expected: Decodable {
        var shape: [Int]
        var bits: [Int32]?
        var values: [Int64]?
        var floats: [Float] { (bits ?? []).map { Float(bitPattern: UInt32(bitPattern: $0)) } }
    }

    func testFilesWrittenByPythonLoadExactly() throws {
        let file = try SafetensorsFile(contentsOf: fixtureURL("interop_python.safetensors"))
        let expected = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: fixtureURL("interop_expected.json")))
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "written by safetensors"])
        XCTAssertEqual(try file.entry(named: "weights.f16").dtype, .f16)
        for name in ["weights.f32", "weights.f16", "weights.bf16", "special.f16", "special.bf16", "empty.f32"] {
            let tensor = try file.tensor(named: name)
            XCTAssertEqual(tensor.shape, expected[name]!.shape, name)
            XCTAssertEqual(tensor.scalars.map(\.bitPattern), expected[name]!.floats.map(\.bitPattern), "\(name) must load bit-exactly")
        }
        XCTAssertEqual(try file.int64s(named: "positions.i64"), expected["positions.i64"]!.values)
        XCTAssertEqual(try file.int64s(named: "positions.i64"), (-3..<9).map(Int64.init))
        XCTAssertThrowsError(try file.tensor(named: "positions.i64")) { error in
            XCTAssertEqual(error as? SafetensorsError, .notFloatingPoint(tensor: "positions.i64", dtype: "I64"))
        }
        XCTAssertThrowsError(try file.tensor(named: "weights.f61")) { error in
            guard case let .tensorNotFound(_, closest)? = error as? SafetensorsError else { return XCTFail("\(error)") }
            XCTAssertEqual(closest.first, "weights.f16")
        }
    }

    func testOurHalfAndBFloatEncodingsMatchPythons() throws {
        // Python stored the F16/BF16 roundings of the same source values: our rounding must give the same bits.
        let file = try SafetensorsFile(contentsOf: fixtureURL("interop_python.safetensors"))
        let expected = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: fixtureURL("interop_expected.json")))
        let source = Tensor(shape: [10], scalars: expected["__special_source__"]!.floats)
        for (dtype, name) in [(SafetensorsDType.f16, "special.f16"), (.bf16, "special.bf16")] {
            let ours = SafetensorsWriter.Item(name: name, tensor: source, dtype: dtype).bytes
            XCTAssertEqual(ours, [UInt8](try file.storedBytes(named: name)), name)
        }
        let weights = try file.tensor(named: "weights.f32")
        XCTAssertEqual(SafetensorsWriter.Item(name: "w", tensor: weights, dtype: .f16).bytes, [UInt8](try file.storedBytes(named: "weights.f16")))
        XCTAssertEqual(SafetensorsWriter.Item(name: "w", tensor: weights, dtype: .bf16).bytes, [UInt8](try file.storedBytes(named: "weights.bf16")))
    }

    #if !(os(macOS) && arch(x86_64))
    func testHalfConversionsAgreeWithSwiftFloat16Everywhere() {
        // Every half bit pattern decodes as Swift's Float16 does.
        for bits in 0...UInt16.max {
            let ours = HalfPrecision.float(fromHalf: bits), reference = Float(Float16(bitPattern: bits))
            XCTAssert(ours.bitPattern == reference.bitPattern || (ours.isNaN && reference.isNaN), "half \(bits)")
        }
        // Encoding rounds to nearest even exactly as Float16(Float) does, across the whole range.
        var generator = PhiloxGenerator(seed: 11)
        for _ in 0..<200_000 {
            let value = Float(bitPattern: generator.nextUInt32())
            guard !value.isNaN else { continue }
            XCTAssertEqual(HalfPrecision.halfBits(from: value), Float16(value).bitPattern, "float \(value)")
        }
    }
    #endif

    func testRoundTripAndAtomicReplace() throws {
        let directory = temporaryDirectory()
        let url = directory.appendingPathComponent("model.safetensors")
        var g = PhiloxGenerator(seed: 2)
        let a = Tensor(randomNormal: [3, 4], generator: &g), b = Tensor(randomNormal: [7], generator: &g)
        try SafetensorsWriter.write([("b", b), ("a", a)], metadata: ["k": "v \"quoted\""], to: url)
        let file = try SafetensorsFile(contentsOf: url)
        XCTAssertEqual(file.names, ["a", "b"])
        XCTAssertEqual(try file.tensor(named: "a").scalars, a.scalars)
        XCTAssertEqual(file.metadata["k"], "v \"quoted\"")
        // A failing write (duplicate names) leaves the old file untouched and no temporary behind.
        let before = try Data(contentsOf: url)
        XCTAssertThrowsError(try SafetensorsWriter.write([("a", a), ("a", b)], to: url))
        XCTAssertEqual(try Data(contentsOf: url), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["model.safetensors"])
    }
}

/// Hostile input: ≥ 1,000 mutated files, each rejected with a typed error, never a crash or hang.
final class SafetensorsFuzzTests: XCTestCase {
    func validFile() throws -> Data {
        var g = PhiloxGenerator(seed: 5)
        return try SafetensorsWriter.encode([
            .init(name: "encoder.weight", tensor: Tensor(randomNormal: [4, 3], generator: &g)),
            .init(name: "encoder.bias", tensor: Tensor(randomNormal: [4], generator: &g), dtype: .f16),
            .init(name: "head.weight", tensor: Tensor(randomNormal: [2, 4], generator: &g), dtype: .bf16),
            .init(name: "positions", int64s: [0, 1, 2], shape: [3]),
        ], metadata: ["format": "pt"])
    }

    func header(_ json: String, data: [UInt8]) -> Data {
        var bytes = Array(json.utf8)
        while bytes.count % 8 != 0 { bytes.append(0x20) }
        var file = Data()
        withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: bytes)
        file.append(contentsOf: data)
        return file
    }

    func testMutatedFilesAreRejectedWithTypedErrors() throws {
        let valid = try validFile()
        XCTAssertNoThrow(try SafetensorsFile(bytes: valid))
        var cases: [(String, Data)] = []
        // Every truncation.
        for length in 0..<valid.count { cases.append(("truncated to \(length)", valid.prefix(length))) }
        // Huge and off-by-one header lengths.
        for length: UInt64 in [UInt64.max, UInt64(Int64.max), 1 << 40, 100_000_001, UInt64(valid.count - 7), UInt64(valid.count)] {
            var copy = valid
            withUnsafeBytes(of: length.littleEndian) { copy.replaceSubrange(0..<8, with: $0) }
            cases.append(("header length \(length)", copy))
        }
        let data = [UInt8](repeating: 0, count: 48)
        let entry = { (name: String, dtype: String, shape: String, offsets: String) in "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":\(offsets)}" }
        // Overlapping, out-of-range, gapped and malformed offsets.
        for (a, b) in [("[0,24]", "[16,40]"), ("[0,24]", "[0,24]"), ("[24,48]", "[20,44]")] {
            cases.append(("overlap \(a) \(b)", header("{" + entry("x", "F32", "[6]", a) + "," + entry("y", "F32", "[6]", b) + "}", data: data)))
        }
        for offsets in ["[0,4800]", "[40,64]", "[48,24]", "[-1,23]", "[0]", "[0,24,48]", "\"0,24\"", "[0.0,24]", "[0,1e2]", "[0,99999999999999999999999]"] {
            cases.append(("offsets \(offsets)", header("{" + entry("x", "F32", "[6]", offsets) + "}", data: data)))
        }
        cases.append(("gap", header("{" + entry("x", "F32", "[6]", "[24,48]") + "}", data: data)))
        cases.append(("trailing bytes", header("{" + entry("x", "F32", "[6]", "[0,24]") + "}", data: data)))
        // dtype/shape mismatches and bad shapes/dtypes.
        for (dtype, shape) in [("F16", "[6]"), ("F32", "[7]"), ("F64", "[12]"), ("I64", "[12]"), ("F32", "[2,2]"), ("F32", "[-6]"),
                               ("F32", "[6.5]"), ("F32", "6"), ("F32", "[\"6\"]"), ("F32", "[4294967296,4294967296,4294967296]"),
                               ("F8", "[12]"), ("f32", "[12]"), ("", "[12]")] {
            cases.append(("dtype \(dtype) shape \(shape)", header("{" + entry("x", dtype, shape, "[0,48]") + "}", data: data)))
        }
        // Structural and JSON errors.
        let structural = [
            "[]", "\"x\"", "{", "{\"x\":}", "{\"x\":{\"dtype\":\"F32\",\"shape\":[12]}}", "{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,48]}}",
            "{\"x\":{\"shape\":[12],\"data_offsets\":[0,48]}}", "{\"x\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48],\"extra\":1}}",
            "{\"x\":[1,2]}", "{\"__metadata__\":[],\"x\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]}}",
            "{\"__metadata__\":{\"a\":1},\"x\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]}}",
            "{\"x\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]},\"x\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]}}",
            "{\"\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]}}",
            String(repeating: "[", count: 100_000), "{\"x\":\"\\ud800\"}", "{\"x\":\"\\q\"}", "{'x':1}", "{\"x\":tru}", "{\"x\":01}",
        ]
        for json in structural { cases.append(("header \(json.prefix(40))", header(json, data: data))) }
        // Invalid UTF-8 in the header.
        for bad: [UInt8] in [[0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80]] {
            var json = Array("{\"x".utf8) + bad + Array("\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]}}".utf8)
            while json.count % 8 != 0 { json.append(0x20) }
            var file = Data()
            withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
            cases.append(("invalid UTF-8 \(bad)", file + json + data))
        }
        // Random byte flips inside the header of the valid file: a typed error, or a still-valid file.
        var g = PhiloxGenerator(seed: 9)
        let headerLength = Int(valid.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var flipsStillValid = 0
        for _ in 0..<600 {
            var copy = valid
            let position = 8 + Int(g.nextUInt32()) % headerLength
            copy[position] ^= UInt8(truncatingIfNeeded: 1 + g.nextUInt32() % 255)
            do {
                let file = try SafetensorsFile(bytes: copy)
                flipsStillValid += 1
                for entry in file.entries where entry.dtype.isFloatingPoint { _ = try file.tensor(named: entry.name) }
            } catch {
                XCTAssertFalse(error.description.isEmpty) // typed: SafetensorsError by the throws(…) signature
            }
        }
        XCTAssertLessThan(flipsStillValid, 100, "most header flips must be caught")

        XCTAssertGreaterThanOrEqual(cases.count, 400)
        var rejected = 0
        for (label, bytes) in cases {
            do {
                _ = try SafetensorsFile(bytes: bytes)
                XCTFail("accepted a bad file: \(label)")
            } catch {
                rejected += 1
                XCTAssertFalse(error.description.isEmpty)
            }
        }
        XCTAssertGreaterThanOrEqual(rejected + (600 - flipsStillValid), 1000, "at least 1,000 mutated files rejected with typed errors")
    }

    func testCheckpointInspectReportsTheTypedErrorAndExitsNonZero() throws {
        // The CLI path is the same reader; a file on disk too.
        let url = temporaryDirectory().appendingPathComponent("bad.safetensors")
        try Data([1, 2, 3]).write(to: url)
        XCTAssertThrowsError(try SafetensorsFile(contentsOf: url)) { error in
            XCTAssertEqual(error as? SafetensorsError, .truncated(fileSize: 3))
        }
        XCTAssertThrowsError(try SafetensorsFile(contentsOf: url.appendingPathExtension("missing"))) { error in
            guard case .unreadable? = error as? SafetensorsError else { return XCTFail("\(error)") }
        }
    }
}
