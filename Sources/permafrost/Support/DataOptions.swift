import ArgumentParser
import Foundation
import PermafrostIO

/// Where the shipped data lives, and the class-slot mapping every command shares.
struct DataOptions: ParsableArguments {
    @Option(help: "Data folder with mnist/ and fashion-mnist/ (default: ./Data, else the Data/ folder of this source tree).")
    var data: String?

    func directory() throws -> URL {
        var candidates: [URL] = []
        if let data { candidates.append(URL(fileURLWithPath: data)) } else {
            candidates.append(URL(fileURLWithPath: "Data"))
            // Sources/permafrost/Support/DataOptions.swift → the package root.
            candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Data"))
        }
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("mnist").path) {
            return candidate
        }
        throw CLIError("no data folder found (looked in \(candidates.map(\.path).joined(separator: ", "))); pass --data DIR with mnist/ inside")
    }

    /// The shipped data sets in ``directory()``.
    func shipped() throws -> ShippedData {
        do { return try ShippedData(directory: try directory()) } catch let error as DatasetError { throw CLIError(error.description) }
    }

    /// MNIST digits `digits` (labels = digits) plus Fashion-MNIST classes mapped to slots 10–12.
    func load(split: String, digits: Set<Int>, fashion: Set<Int> = []) throws -> LabeledImages {
        do { return try shipped().load(split: split, digits: digits, fashion: fashion) } catch let error as DatasetError { throw CLIError(error.description) }
    }

    /// The same images, streamed from disk a batch at a time (`DiskBackedImages`).
    func loadOnDisk(split: String, digits: Set<Int>, fashion: Set<Int> = []) throws -> DiskBackedImages {
        do { return try shipped().loadOnDisk(split: split, digits: digits, fashion: fashion) } catch let error as DatasetError { throw CLIError(error.description) }
    }
}

/// Parses "0-5,8,9" into integers.
func parseRanges(_ text: String, name: String) throws -> [Int] {
    var values: [Int] = []
    for part in text.split(separator: ",") {
        let bounds = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        if bounds.count == 1, let v = bounds[0] { values.append(v) }
        else if bounds.count == 2, let a = bounds[0], let b = bounds[1], a <= b { values += Array(a...b) }
        else { throw ValidationError("\(name): cannot read '\(part)' (use e.g. 0-5,8)") }
    }
    guard !values.isEmpty else { throw ValidationError("\(name) is empty") }
    return values
}

/// Parses a list like "512,1024" (ranges allowed) whose values must all be positive.
func parsePositive(_ text: String, name: String) throws -> [Int] {
    let values = try parseRanges(text, name: name)
    guard values.allSatisfy({ $0 > 0 }) else { throw ValidationError("\(name) must list positive integers, got '\(text)'") }
    return values
}
