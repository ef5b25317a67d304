/// The median of a sample (NaN when empty): what every timing in Permafrost's reports quotes, since
/// single steps on shared machines vary by tens of percent.
public func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
