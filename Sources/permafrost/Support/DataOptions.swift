import ArgumentParser
import Foundation
import PermafrostIO
import PermafrostTensor

/// Where the shipped data lives.
struct DataOptions: ParsableArguments {
    @Option(help: "Data folder with mnist/ and fashion-mnist/ (default: ./Data, else the Data/ folder of this source tree).")
    var data: String?

    /// The shipped data sets: in --data, else ./Data, else the Data/ folder of the source tree.
    func shipped() throws -> ShippedData { try ShippedData.locate(data) }
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

/// Dynamic freezing and 8-bit activations, as both fine-tune commands offer them.
struct FreezingOptions: ParsableArguments {
    @Option(help: "Dynamic freezing: none or slimfit.") var scheduler: String = "none"
    @Option(help: "SlimFit: fraction of candidate tensors frozen at each step.") var freezeBudget: Double = 0.8
    @Flag(help: "Keep static activations (activation functions', frozen norms') in 8 bits, as SlimFit does.") var compressActivations = false
    @Flag(help: "Also keep the inputs trainable convolutions and matmuls save for their weight gradients in 8 bits (implies --compress-activations).") var compressWeightInputs = false

    /// SlimFit's budget, or nil for no dynamic freezing.
    func slimFitBudget() throws -> Double? {
        switch scheduler {
        case "none": return nil
        case "slimfit":
            guard freezeBudget >= 0, freezeBudget < 1 else { throw ValidationError("--freeze-budget must be in [0, 1), got \(freezeBudget)") }
            return freezeBudget
        default: throw ValidationError("--scheduler must be none or slimfit, got '\(scheduler)'")
        }
    }

    var activationCompression: ActivationCompression {
        compressWeightInputs ? .int8WithWeightInputs : compressActivations ? .int8 : .none
    }
}
