import Foundation

/// Labelled sentences from a TSV file (`label<TAB>text` per line after a `label<TAB>text` header;
/// plain or gzip'd): the shipped review snippets, or a user's own set.
public struct LabeledTexts: Sendable, Equatable {
    public var texts: [String]
    public var labels: [String]
    public var count: Int { texts.count }

    public init(texts: [String], labels: [String]) {
        precondition(texts.count == labels.count, "\(texts.count) texts for \(labels.count) labels")
        self.texts = texts
        self.labels = labels
    }

    /// Reads and validates a TSV: UTF-8, the header, a tab on every row, a non-empty label,
    /// at most `maxRows` rows of at most `maxCharacters` characters, labels from `allowedLabels` when given.
    /// Errors name the row.
    public init(contentsOf url: URL, allowedLabels: Set<String>? = nil, maxRows: Int = 1_000_000, maxCharacters: Int = 10_000) throws(DatasetError) {
        var data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: url.path, reason: error.localizedDescription) }
        if Compression.isGzip(data) {
            do { data = try Compression.inflate(data, limit: 256 << 20) } catch { throw .compression(path: url.path, reason: error.description) }
        }
        try self.init(tsv: data, source: url.lastPathComponent, allowedLabels: allowedLabels, maxRows: maxRows, maxCharacters: maxCharacters)
    }

    public init(tsv data: Data, source: String = "TSV", allowedLabels: Set<String>? = nil, maxRows: Int = 1_000_000,
                maxCharacters: Int = 10_000) throws(DatasetError) {
        guard let text = String(data: data, encoding: .utf8) else { throw .invalidTable("\(source) is not valid UTF-8") }
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        guard let header = lines.first, header.trimmingCharacters(in: .whitespacesAndNewlines) == "label\ttext" else {
            throw .invalidTable("\(source): the first line must be the header 'label<TAB>text'")
        }
        guard lines.count - 1 <= maxRows else { throw .invalidTable("\(source) has \(lines.count - 1) rows; the limit is \(maxRows)") }
        var texts: [String] = [], labels: [String] = []
        for (index, raw) in lines.dropFirst().enumerated() {
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw, row = index + 2
            guard let tab = line.firstIndex(of: "\t") else { throw .invalidTable("\(source) line \(row): no tab between label and text") }
            let label = String(line[..<tab]), body = String(line[line.index(after: tab)...])
            // An empty text is kept (the shipped snippets have 14 rows without one); an empty label is not.
            guard !label.isEmpty else { throw .invalidTable("\(source) line \(row): empty label") }
            if let allowedLabels, !allowedLabels.contains(label) {
                throw .invalidTable("\(source) line \(row): label '\(label.prefix(40))' is not one of \(allowedLabels.sorted().joined(separator: ", "))")
            }
            guard body.count <= maxCharacters else { throw .invalidTable("\(source) line \(row): \(body.count) characters; the limit is \(maxCharacters)") }
            texts.append(body); labels.append(label)
        }
        self.init(texts: texts, labels: labels)
    }
}

extension ShippedData {
    /// The review snippets (`rt-snippets/{train,test}.tsv.gz`): labels fresh, rotten, plot.
    public func loadTexts(split: String) throws(DatasetError) -> LabeledTexts {
        try LabeledTexts(contentsOf: directory.appendingPathComponent("rt-snippets/\(split).tsv.gz"), allowedLabels: ["fresh", "rotten", "plot"])
    }
}
