import Foundation
import PermafrostTensor

/// One measured configuration.
public struct BenchRow: Codable, Sendable {
    public var bench: String
    public var config: String
    public var ours: Double
    public var peer: Double?
    public var unit: String
    /// Our cost over the peer's: time ÷ time, or peer throughput ÷ our throughput. Below 1: we are faster.
    public var ratio: Double?
    public var higherIsBetter: Bool

    public init(bench: String, config: String, ours: Double, peer: Double?, unit: String, higherIsBetter: Bool) {
        self.bench = bench
        self.config = config
        self.ours = ours
        self.peer = peer
        self.unit = unit
        self.higherIsBetter = higherIsBetter
        if let peer, peer > 0, ours > 0 {
            ratio = higherIsBetter ? peer / ours : ours / peer
        }
    }

    enum CodingKeys: String, CodingKey { case bench, config, ours, peer, unit, ratio }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bench = try c.decode(String.self, forKey: .bench)
        config = try c.decode(String.self, forKey: .config)
        ours = try c.decode(Double.self, forKey: .ours)
        peer = try c.decodeIfPresent(Double.self, forKey: .peer)
        unit = try c.decode(String.self, forKey: .unit)
        ratio = try c.decodeIfPresent(Double.self, forKey: .ratio)
        higherIsBetter = unit.contains("/s")
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(bench, forKey: .bench)
        try c.encode(config, forKey: .config)
        try c.encode(ours, forKey: .ours)
        try c.encode(peer, forKey: .peer) // explicit null without a peer
        try c.encode(unit, forKey: .unit)
        try c.encode(ratio, forKey: .ratio)
    }
}

/// Prints rows as an aligned table or as JSON lines.
public enum BenchPrinter {
    public static func print(_ rows: [BenchRow], json: Bool, peerName: String?) {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for row in rows {
                if let data = try? encoder.encode(row), let line = String(data: data, encoding: .utf8) { Swift.print(line) }
            }
            return
        }
        let header = ["bench", "config", "ours", peerName ?? "peer", "unit", "ratio"]
        let table = rows.map { row in
            // A cosine near 1 needs its digits: "1" would hide a 0.9996.
            [row.bench, row.config, row.unit == "cosine" ? String(format: "%.6f", row.ours) : format(row.ours), row.peer.map(format) ?? "—", row.unit,
             row.ratio.map { String(format: "%.3f", $0) } ?? "—"]
        }
        let widths = header.indices.map { column in ([header] + table).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        Swift.print(line(header))
        Swift.print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
        for row in table { Swift.print(line(row)) }
        Swift.print("ratio = our cost ÷ peer's (time ÷ time, or peer throughput ÷ ours): below 1.0 means Permafrost is faster.")
        Swift.print(blasKernelsLine)
        Swift.print(ConvolutionKernels.summary)
    }

    /// Which OpenBLAS kernels ran, and whether Permafrost had to re-select them (see `BLASCoreSelection`).
    public static var blasKernelsLine: String {
        _ = Parallel.threadCount
        guard let outcome = BLASCoreSelection.outcome else { return "BLAS: not a dynamic-dispatch OpenBLAS (kernels as built)." }
        return outcome.reselected
            ? "OpenBLAS kernels: \(outcome.active) (OpenBLAS detected \(outcome.detected); re-selected from the CPU's features)."
            : "OpenBLAS kernels: \(outcome.active)."
    }

    static func format(_ value: Double) -> String {
        value >= 100 ? String(format: "%.1f", value) : String(format: "%.3g", value)
    }
}

/// Seconds from a monotonic clock.
public func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Writes a progress line to standard error (kept off stdout so --json output stays clean).
func progress(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
