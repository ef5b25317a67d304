import PermafrostTensor

/// Which named tensors are frozen: a set of names (it survives reordering, unlike an index mask),
/// plus optional frozen row ranges of tensors that otherwise train.
///
/// Plans combine by union. A plan marked ``isEnforced`` (a publisher's guard) can never be narrowed:
/// tensors it froze stay frozen whatever plan or call comes later.
///
/// JSON form: `{"enforced": false, "frozen": ["a.weight", …], "frozen_rows": {"embed.weight": [[0, 1000]]}}`.
public struct FreezePlan: Hashable, Sendable, Codable {
    /// A half-open range of rows (axis 0).
    public struct RowRange: Hashable, Sendable, Codable {
        public var lower: Int
        public var upper: Int
        public init(_ range: Range<Int>) { lower = range.lowerBound; upper = range.upperBound }
        public var range: Range<Int> { lower..<upper }

        public init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            lower = try container.decode(Int.self)
            upper = try container.decode(Int.self)
            guard lower >= 0, lower <= upper else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "row range [\(lower), \(upper)) is invalid")
            }
        }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(lower)
            try container.encode(upper)
        }
    }

    /// Tensors frozen whole.
    public var frozen: Set<String>
    /// Row ranges frozen in tensors that are not frozen whole.
    public var frozenRows: [String: [RowRange]]
    /// A publisher's plan: once applied, its tensors cannot be unfrozen.
    public var isEnforced: Bool

    public init(frozen: Set<String> = [], frozenRows: [String: [Range<Int>]] = [:], isEnforced: Bool = false) {
        self.frozen = frozen
        self.frozenRows = frozenRows.mapValues { $0.map(RowRange.init) }
        self.isEnforced = isEnforced
    }

    /// Everything either plan freezes; enforced if either is. (Enforcement of an applied plan lives
    /// on the parameters, so a union can only ever add.)
    public func union(_ other: FreezePlan) -> FreezePlan {
        var result = self
        result.frozen.formUnion(other.frozen)
        for (name, ranges) in other.frozenRows { result.frozenRows[name, default: []] += ranges }
        result.isEnforced = isEnforced || other.isEnforced
        return result
    }

    /// A plan that freezes every parameter of `model` whose name matches one of the glob `patterns`
    /// (`*` matches any run of characters, dots included; `?` one character).
    public static func matching(_ patterns: [String], in model: Module) throws(FreezeError) -> FreezePlan {
        let names = model.namedParameters().map(\.name)
        var frozen = Set<String>()
        for pattern in patterns {
            let matched = names.filter { Glob.matches($0, pattern: pattern) }
            guard !matched.isEmpty else { throw .patternMatchedNothing(pattern: pattern, closest: closestNames(to: pattern, among: names)) }
            frozen.formUnion(matched)
        }
        return FreezePlan(frozen: frozen)
    }

    enum CodingKeys: String, CodingKey {
        case frozen, frozenRows = "frozen_rows", isEnforced = "enforced"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        frozen = try container.decode(Set<String>.self, forKey: .frozen)
        frozenRows = try container.decodeIfPresent([String: [RowRange]].self, forKey: .frozenRows) ?? [:]
        isEnforced = try container.decodeIfPresent(Bool.self, forKey: .isEnforced) ?? false
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(frozen.sorted(), forKey: .frozen)
        if !frozenRows.isEmpty { try container.encode(frozenRows, forKey: .frozenRows) }
        try container.encode(isEnforced, forKey: .isEnforced)
    }
}

/// Why a freezing request was refused.
public enum FreezeError: Error, Equatable, CustomStringConvertible {
    case unknownTensor(name: String, closest: [String])
    case patternMatchedNothing(pattern: String, closest: [String])
    case unknownModule(path: String, closest: [String])
    case enforcedTensor(name: String)
    case invalidRowRange(name: String, range: Range<Int>, rows: Int)

    public var description: String {
        switch self {
        case let .unknownTensor(name, closest):
            return "the model has no tensor named '\(name)'" + Self.suggestion(closest)
        case let .patternMatchedNothing(pattern, closest):
            return "the pattern '\(pattern)' matches no tensor of the model" + Self.suggestion(closest)
        case let .unknownModule(path, closest):
            return "the model has no module at '\(path)'" + Self.suggestion(closest)
        case let .enforcedTensor(name):
            return "'\(name)' is frozen by an enforced plan (the publisher's guard) and cannot be unfrozen"
        case let .invalidRowRange(name, range, rows):
            return "row range \(range.lowerBound)..<\(range.upperBound) is outside the \(rows) rows of '\(name)'"
        }
    }

    private static func suggestion(_ closest: [String]) -> String {
        closest.isEmpty ? "" : "; closest names: " + closest.map { "'\($0)'" }.joined(separator: ", ")
    }
}

/// Shell-style glob matching on tensor names.
enum Glob {
    static func matches(_ text: String, pattern: String) -> Bool {
        let t = Array(text.utf8), p = Array(pattern.utf8)
        var ti = 0, pi = 0, starP = -1, starT = 0
        while ti < t.count {
            if pi < p.count && (p[pi] == UInt8(ascii: "?") || p[pi] == t[ti]) {
                ti += 1; pi += 1
            } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
                starP = pi; starT = ti; pi += 1
            } else if starP >= 0 {
                pi = starP + 1; starT += 1; ti = starT
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}
