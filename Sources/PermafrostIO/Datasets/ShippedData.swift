import Foundation

/// The data Permafrost ships in `Data/` — MNIST digits and three Fashion-MNIST classes — and the
/// class slots every model, command and protocol shares: digits 0–9 are slots 0–9, Fashion
/// trouser, sneaker and bag (classes 1, 7, 8) are slots 10–12, and 13–15 are left unused.
public struct ShippedData: Sendable {
    /// The folder holding `mnist/` and `fashion-mnist/`.
    public let directory: URL

    /// Fashion-MNIST classes used by Permafrost and the model slots they occupy.
    public static let fashionSlots: [Int: Int] = [1: 10, 7: 11, 8: 12]
    public static let fashionNames: [Int: String] = [10: "trouser", 11: "sneaker", 12: "bag"]

    /// The data in `directory`, which must hold `mnist/`.
    public init(directory: URL) throws(DatasetError) {
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("mnist").path) else {
            throw .notFound("no mnist/ folder in '\(directory.path)'")
        }
        self.directory = directory
    }

    /// The shipped data in `path` when given; else in `./Data`, else in the `Data/` folder of the
    /// source tree this library was built from (so `swift run` works from anywhere in a checkout).
    public static func locate(_ path: String?) throws(DatasetError) -> ShippedData {
        var candidates: [URL] = []
        if let path { candidates.append(URL(fileURLWithPath: path)) } else {
            candidates.append(URL(fileURLWithPath: "Data"))
            // Sources/PermafrostIO/Datasets/ShippedData.swift → the package root.
            candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Data"))
        }
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("mnist").path) {
            return try ShippedData(directory: candidate)
        }
        throw .notFound("no data folder found (looked in \(candidates.map(\.path).joined(separator: ", "))); pass --data DIR with mnist/ inside")
    }

    /// MNIST `digits` (labels = digits) plus Fashion-MNIST `fashion` classes under slots 10–12.
    public func load(split: String, digits: Set<Int>, fashion: Set<Int> = []) throws(DatasetError) -> LabeledImages {
        var set = try LabeledImages(directory: directory.appendingPathComponent("mnist"), split: split).filtered(digits)
        if !fashion.isEmpty {
            let slots = try Self.slots(forFashion: fashion)
            set = set + (try LabeledImages(directory: directory.appendingPathComponent("fashion-mnist"), split: split)
                .filtered(Set(slots.keys)).relabeled(slots))
        }
        return set
    }

    /// The same images as ``load(split:digits:fashion:)``, streamed into a temporary file and read
    /// a batch at a time: training then holds no copy of the data set (`DiskBackedImages`).
    public func loadOnDisk(split: String, digits: Set<Int>, fashion: Set<Int> = []) throws(DatasetError) -> DiskBackedImages {
        var parts = [DiskBackedImages.Part(directory: directory.appendingPathComponent("mnist"), split: split,
                                           slots: Dictionary(uniqueKeysWithValues: digits.map { ($0, $0) }))]
        if !fashion.isEmpty {
            parts.append(DiskBackedImages.Part(directory: directory.appendingPathComponent("fashion-mnist"), split: split,
                                               slots: try Self.slots(forFashion: fashion)))
        }
        return try DiskBackedImages(parts)
    }

    /// The real test images showing the content of `slots` (digits and Fashion slots 10–12).
    public func testImages(showing slots: Set<Int>) throws(DatasetError) -> LabeledImages {
        try load(split: "t10k", digits: Set(slots.filter { $0 < 10 }),
                 fashion: Set(Self.fashionSlots.filter { slots.contains($0.value) }.map(\.key)))
    }

    private static func slots(forFashion classes: Set<Int>) throws(DatasetError) -> [Int: Int] {
        var slots: [Int: Int] = [:]
        for c in classes {
            guard let slot = fashionSlots[c] else { throw .notFound("Fashion-MNIST class \(c) is not shipped; the shipped classes are \(fashionSlots.keys.sorted())") }
            slots[c] = slot
        }
        return slots
    }
}
