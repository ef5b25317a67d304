import Foundation

// Every layer names tensors by string (checkpoints, freeze plans, guards); a wrong name is answered
// with the nearest real ones, so the suggestion lives at the bottom of the target graph.

/// Up to three names nearest to `name` by edit distance.
public func closestNames(to name: String, among names: [String], limit: Int = 3) -> [String] {
    let scored: [(name: String, distance: Int)] = names.map { ($0, editDistance(name, $0)) }
    let ranked = scored.sorted { (a: (name: String, distance: Int), b: (name: String, distance: Int)) -> Bool in
        a.distance != b.distance ? a.distance < b.distance : a.name < b.name
    }
    return ranked.prefix(limit).map { $0.name }
}

/// Levenshtein distance over Unicode scalars.
public func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
    if x.isEmpty { return y.count }
    if y.isEmpty { return x.count }
    var previous = Array(0...y.count), current = [Int](repeating: 0, count: y.count + 1)
    for i in 1...x.count {
        current[0] = i
        for j in 1...y.count {
            current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[y.count]
}
