import Foundation
import PermafrostModels
import PermafrostNN
import PermafrostTensor

/// `bench text`: a fine-tuning step of a pretrained BERT (all-MiniLM-L6-v2) at batch 32 × 128 tokens,
/// ours vs PyTorch + transformers, every configuration in a fresh process of each so that each peak
/// RSS is that run's own; and the parity of the two models' mean-pooled sentence embeddings.
///
/// Both sides train the same thing: mean pooling over real tokens, a Linear head over the labels,
/// AdamW at 5e-5, the model's dropout, sentences padded (or truncated) to exactly `length` tokens.
public enum TextBenchmark {
    public static let configurations = ["0%", "50%", "80%", "probe"]

    /// What both sides read: the step's sentences with their class indices, and the sentences whose
    /// embeddings are compared.
    public struct Inputs: Codable, Sendable {
        public var trainTexts: [String]
        public var trainLabels: [Int]
        public var parityTexts: [String]
        public var length: Int

        public init(trainTexts: [String], trainLabels: [Int], parityTexts: [String], length: Int) {
            self.trainTexts = trainTexts; self.trainLabels = trainLabels; self.parityTexts = parityTexts; self.length = length
        }

        /// The first `batch` training sentences (labels named, indexed in sorted order) and the first
        /// `paritySentences` test sentences.
        public init(trainTexts texts: [String], labelNames: [String], testTexts: [String], batch: Int, paritySentences: Int, length: Int) throws {
            guard texts.count >= batch, labelNames.count == texts.count, testTexts.count >= paritySentences else {
                throw BenchError("the text set has \(texts.count) training and \(testTexts.count) test sentences; the bench needs \(batch) and \(paritySentences)")
            }
            let names = Array(Set(labelNames)).sorted()
            trainTexts = Array(texts.prefix(batch))
            trainLabels = labelNames.prefix(batch).map { names.firstIndex(of: $0) ?? 0 }
            parityTexts = Array(testTexts.prefix(paritySentences))
            self.length = length
        }

        var classes: Int { (trainLabels.max() ?? 0) + 1 }
    }

    /// One configuration of ours, in this process: the seconds of each timed step, the peak RSS, and
    /// how many tensors the configuration froze (the peer must freeze as many).
    public static func worker(model directory: URL, inputs: Inputs, frozen: String, steps: Int, threads: Int) throws -> WorkerResult {
        Parallel.threadCount = threads
        let classifier = try BertClassifier(directory: directory, classes: inputs.classes, pooling: .mean, seed: 1)
        let fraction: Double?
        switch frozen {
        case "probe": fraction = nil
        default:
            guard frozen.hasSuffix("%"), let percent = Double(frozen.dropLast()) else { throw BenchError("--frozen: 0%, 50%, 80% or probe") }
            fraction = percent / 100
        }
        try freezeLeading(classifier, fraction: fraction)
        let frozenTensors = classifier.namedParameters().filter { $0.parameter.isFrozen }.count
        let tokens = try batch(inputs.trainTexts, directory: directory, length: inputs.length)
        let (times, _) = try timedSteps(classifier, steps: steps, learningRate: 5e-5) {
            crossEntropy(logits: classifier.logits(tokens), labels: inputs.trainLabels)
        }
        return WorkerResult(seconds: times, peakRSS: MemoryStatistics.peakResidentMegabytes, frozenTensors: frozenTensors)
    }

    /// Our mean-pooled embeddings of the parity sentences, one row per sentence.
    public static func embeddings(model directory: URL, texts: [String], threads: Int) throws -> [[Float]] {
        Parallel.threadCount = threads
        let bert = try BertModel(directory: directory)
        bert.setTraining(false)
        var tokenizer = try WordPieceTokenizer(directory: directory)
        (tokenizer.maxLength, tokenizer.padToLength) = (sentenceTransformersMaxLength(directory) ?? bert.config.maxPositions, nil)
        return GradientRecording.withoutRecording {
            texts.map { bert.meanPooled(TokenBatch([tokenizer.encode($0)])).scalars }
        }
    }

    /// sentence-transformers truncates at its own `max_seq_length` (256 for all-MiniLM-L6-v2), not at the model's positions.
    static func sentenceTransformersMaxLength(_ directory: URL) -> Int? {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("sentence_bert_config.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return (object["max_seq_length"] as? NSNumber)?.intValue
    }

    /// `texts` tokenised with the model's tokenizer, truncated or padded to exactly `length` tokens.
    static func batch(_ texts: [String], directory: URL, length: Int) throws -> TokenBatch {
        var tokenizer = try WordPieceTokenizer(directory: directory)
        (tokenizer.maxLength, tokenizer.padToLength) = (length, length)
        return TokenBatch(texts.map { tokenizer.encode($0) })
    }

    /// Runs every configuration `rounds` times, ours and the peer's interleaved; then the embedding
    /// parity. `worker` is our binary (`[worker, "bench", "text-worker", …]`).
    public static func run(model directory: URL, inputs: Inputs, configurations: [String], steps: Int, rounds: Int, threads: Int,
                           peer: Bool, worker: String) throws -> (rows: [BenchRow], peerRan: Bool) {
        let peerScript = try PeerScripts.url("text_peer.py")
        let inputsURL = FileManager.default.temporaryDirectory.appendingPathComponent("permafrost-text-bench-\(getpid()).json")
        try JSONEncoder().encode(inputs).write(to: inputsURL)
        defer { try? FileManager.default.removeItem(at: inputsURL) }
        let peerAvailable = peer && (try? runProcess(["/usr/bin/env", "python3", "-c", "import torch, transformers"])) != nil
        if peer && !peerAvailable { progress("PyTorch + transformers peer unavailable: reporting ours only.") }
        var ours: [String: [Double]] = [:], oursRSS: [String: Double] = [:], theirs: [String: [Double]] = [:], theirsRSS: [String: Double] = [:]
        for round in 1...rounds {
            for frozen in configurations {
                progress("round \(round)/\(rounds)  \(frozen) frozen")
                let output = try runProcess([worker, "bench", "text-worker", "--model", directory.path, "--inputs", inputsURL.path,
                                             "--frozen", frozen, "--steps", "\(steps)", "--threads", "\(threads)"])
                guard let result = WorkerResult(output: output), result.frozenTensors != nil else { throw BenchError("our text worker printed no result for \(frozen)") }
                ours[frozen, default: []] += result.seconds
                oursRSS[frozen] = max(oursRSS[frozen] ?? 0, result.peakRSS)
                guard peerAvailable else { continue }
                let answer = try runProcess(["/usr/bin/env", "python3", peerScript.path, "step", directory.path, inputsURL.path, frozen,
                                             "\(steps)", "\(threads)"])
                guard let theirsResult = WorkerResult(output: answer), theirsResult.frozenTensors != nil else { throw BenchError("the PyTorch peer printed no result for \(frozen)") }
                guard theirsResult.frozenTensors == result.frozenTensors else {
                    throw BenchError("\(frozen): the peer froze \(theirsResult.frozenTensors) tensors and we froze \(result.frozenTensors); their state_dict orders differ")
                }
                theirs[frozen, default: []] += theirsResult.seconds
                theirsRSS[frozen] = max(theirsRSS[frozen] ?? 0, theirsResult.peakRSS)
            }
        }
        let name = directory.lastPathComponent
        var rows: [BenchRow] = []
        for frozen in configurations {
            guard let times = ours[frozen] else { continue }
            let config = "model=\(name),frozen=\(frozen),batch=\(inputs.trainTexts.count),length=\(inputs.length),threads=\(threads)"
            rows.append(BenchRow(bench: "text", config: config + ",metric=step", ours: median(times) * 1000,
                                 peer: theirs[frozen].map { median($0) * 1000 }, unit: "ms/step", higherIsBetter: false))
            rows.append(BenchRow(bench: "text", config: config + ",metric=peak_rss", ours: oursRSS[frozen] ?? 0,
                                 peer: theirsRSS[frozen], unit: "MB", higherIsBetter: false))
        }
        if peerAvailable, !inputs.parityTexts.isEmpty {
            progress("embedding parity: \(inputs.parityTexts.count) sentences")
            rows.append(try parityRow(model: directory, inputs: inputs, inputsURL: inputsURL, peerScript: peerScript, threads: threads))
        }
        return (rows, peerAvailable)
    }

    /// The smallest cosine between our and sentence-transformers' embedding of the same sentence.
    static func parityRow(model directory: URL, inputs: Inputs, inputsURL: URL, peerScript: URL, threads: Int) throws -> BenchRow {
        let ours = try embeddings(model: directory, texts: inputs.parityTexts, threads: threads)
        let answer = try runProcess(["/usr/bin/env", "python3", peerScript.path, "embed", directory.path, inputsURL.path, "-", "-", "\(threads)"])
        guard let line = answer.split(separator: "\n").last(where: { $0.hasPrefix("[") }),
              let theirs = try? JSONDecoder().decode([[Float]].self, from: Data(line.utf8)), theirs.count == ours.count else {
            throw BenchError("the sentence-transformers peer printed no embeddings")
        }
        let cosines = zip(ours, theirs).map { cosine($0, $1) }
        return BenchRow(bench: "text", config: "model=\(directory.lastPathComponent),sentences=\(cosines.count),metric=embedding_cosine_min_vs_sentence_transformers",
                        ours: cosines.min() ?? 0, peer: nil, unit: "cosine", higherIsBetter: true)
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y) }
        return dot / max((na * nb).squareRoot(), 1e-30)
    }
}
