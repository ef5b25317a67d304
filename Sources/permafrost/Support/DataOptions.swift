import ArgumentParser
import Foundation
import PermafrostIO

/// Where the shipped data lives, and the class-slot mapping every command shares.
struct DataOptions: ParsableArguments {
    @Option(help: "Data folder with mnist/ and fashion-mnist/ (default: ./Data, else the Data/ folder of this source tree).")
    var data: String?

    /// Fashion-MNIST classes used by Permafrost and the model slots they occupy.
    static let fashionSlots: [Int: Int] = [1: 10, 7: 11, 8: 12]
    static let fashionNames: [Int: String] = [10: "trouser", 11: "sneaker", 12: "bag"]

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

    /// MNIST digits `digits` (labels = digits) plus Fashion-MNIST classes mapped to slots 10–12.
    func load(split: String, digits: Set<Int>, fashion: Set<Int> = []) throws -> LabeledImages {
        let root = try directory()
        do {
            var set = try LabeledImages(directory: root.appendingPathComponent("mnist"), split: split).filtered(digits)
            if !fashion.isEmpty {
                let slots = Dictionary(uniqueKeysWithValues: fashion.map { ($0, Self.fashionSlots[$0]!) })
                set = set + (try LabeledImages(directory: root.appendingPathComponent("fashion-mnist"), split: split).filtered(Set(slots.keys)).relabeled(slots))
            }
            return set
        } catch {
            throw CLIError(error.description)
        }
    }
}

extension DataOptions {
    /// The same images as ``load(split:digits:fashion:)``, streamed into a temporary file and read
    /// a batch at a time: training then holds no copy of the data set (`DiskBackedImages`).
    func loadOnDisk(split: String, digits: Set<Int>, fashion: Set<Int> = []) throws -> DiskBackedImages {
        let root = try directory()
        var parts = [DiskBackedImages.Part(directory: root.appendingPathComponent("mnist"), split: split,
                                           slots: Dictionary(uniqueKeysWithValues: digits.map { ($0, $0) }))]
        if !fashion.isEmpty {
            parts.append(DiskBackedImages.Part(directory: root.appendingPathComponent("fashion-mnist"), split: split,
                                               slots: Dictionary(uniqueKeysWithValues: fashion.map { ($0, Self.fashionSlots[$0]!) })))
        }
        do { return try DiskBackedImages(parts) } catch { throw CLIError(error.description) }
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
