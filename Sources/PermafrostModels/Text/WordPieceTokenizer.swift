import Foundation

/// BERT's WordPiece tokenizer, as Hugging Face `tokenizers` runs it (`BertNormalizer`,
/// `BertPreTokenizer`, `WordPiece`, the `[CLS] A [SEP] (B [SEP])` template): text cleaning, spaces
/// around CJK ideographs, accent stripping and lower-casing, whitespace and punctuation splitting,
/// greedy longest-match-first sub-words with `##` continuations, `[UNK]` for what the vocabulary
/// cannot spell, truncation (longest first for pairs) and padding.
///
/// ```swift
/// let tokenizer = try WordPieceTokenizer(directory: URL(fileURLWithPath: "Models/all-MiniLM-L6-v2"))
/// let encoding = tokenizer.encode("Hello, world!")   // input_ids [101, 7592, 1010, 2088, 999, 102, 0, …]
/// ```
public struct WordPieceTokenizer: Sendable {
    /// One encoded text (or pair), as `tokenizers` returns it.
    public struct Encoding: Sendable, Equatable, Codable {
        public var inputIDs: [Int]
        public var attentionMask: [Int]
        public var tokenTypeIDs: [Int]
        enum CodingKeys: String, CodingKey { case inputIDs = "input_ids", attentionMask = "attention_mask", tokenTypeIDs = "token_type_ids" }
    }

    public let vocabulary: [String: Int]
    public let lowercase: Bool
    public let stripAccents: Bool
    public let cleanText: Bool
    public let handleChineseCharacters: Bool
    public let continuingPrefix: String
    public let maxInputCharactersPerWord: Int
    /// Truncation length including the special tokens (nil: none).
    public var maxLength: Int?
    /// Pad every encoding to this length (nil: no padding).
    public var padToLength: Int?
    public let unknownID: Int, classifierID: Int, separatorID: Int, paddingID: Int

    /// A tokenizer from a vocabulary (one token per line, the id is the line number) and BERT's options.
    public init(vocabulary tokens: [String], lowercase: Bool = true, stripAccents: Bool? = nil, cleanText: Bool = true,
                handleChineseCharacters: Bool = true, continuingPrefix: String = "##", maxInputCharactersPerWord: Int = 100,
                maxLength: Int? = 512, padToLength: Int? = nil, unknownToken: String = "[UNK]") throws(TokenizerError) {
        var vocabulary: [String: Int] = [:]
        for (id, token) in tokens.enumerated() where vocabulary[token] == nil { vocabulary[token] = id }
        func id(_ token: String) throws(TokenizerError) -> Int {
            guard let id = vocabulary[token] else { throw .missingToken(token) }
            return id
        }
        self.vocabulary = vocabulary
        self.lowercase = lowercase
        self.stripAccents = stripAccents ?? lowercase
        self.cleanText = cleanText
        self.handleChineseCharacters = handleChineseCharacters
        self.continuingPrefix = continuingPrefix
        self.maxInputCharactersPerWord = maxInputCharactersPerWord
        self.maxLength = maxLength
        self.padToLength = padToLength
        unknownID = try id(unknownToken)
        classifierID = try id("[CLS]")
        separatorID = try id("[SEP]")
        paddingID = try id("[PAD]")
    }

    /// Reads `tokenizer.json` when the folder has one (its normaliser options, WordPiece settings,
    /// truncation and padding), else `vocab.txt` with BERT's uncased defaults.
    public init(directory: URL) throws(TokenizerError) {
        let json = directory.appendingPathComponent("tokenizer.json"), vocab = directory.appendingPathComponent("vocab.txt")
        if FileManager.default.fileExists(atPath: json.path) {
            try self.init(tokenizerJSON: json)
        } else {
            guard let text = try? String(contentsOf: vocab, encoding: .utf8) else { throw .unreadable("\(vocab.path): no tokenizer.json or readable vocab.txt") }
            var lines = text.components(separatedBy: "\n")
            if lines.last == "" { lines.removeLast() }
            try self.init(vocabulary: lines.map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 })
        }
    }

    /// Reads a Hugging Face `tokenizer.json` with a `BertNormalizer` and a `WordPiece` model.
    public init(tokenizerJSON url: URL) throws(TokenizerError) {
        guard let data = try? Data(contentsOf: url), let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .unreadable("\(url.path) is not a JSON object")
        }
        guard let model = root["model"] as? [String: Any], model["type"] as? String == "WordPiece",
              let vocab = model["vocab"] as? [String: Int], !vocab.isEmpty else {
            throw .unsupported("model.type must be WordPiece with a vocab")
        }
        let normalizer = root["normalizer"] as? [String: Any] ?? [:]
        if let type = normalizer["type"] as? String, type != "BertNormalizer" { throw .unsupported("normalizer.type '\(type)' (only BertNormalizer)") }
        if let type = (root["pre_tokenizer"] as? [String: Any])?["type"] as? String, type != "BertPreTokenizer" {
            throw .unsupported("pre_tokenizer.type '\(type)' (only BertPreTokenizer)")
        }
        var tokens = [String](repeating: "", count: (vocab.values.max() ?? 0) + 1)
        for (token, id) in vocab where id >= 0 { tokens[id] = token }
        let truncation = root["truncation"] as? [String: Any]
        let padding = (root["padding"] as? [String: Any])?["strategy"] as? [String: Any]
        try self.init(vocabulary: tokens, lowercase: normalizer["lowercase"] as? Bool ?? true, stripAccents: normalizer["strip_accents"] as? Bool,
                      cleanText: normalizer["clean_text"] as? Bool ?? true, handleChineseCharacters: normalizer["handle_chinese_chars"] as? Bool ?? true,
                      continuingPrefix: model["continuing_subword_prefix"] as? String ?? "##",
                      maxInputCharactersPerWord: model["max_input_chars_per_word"] as? Int ?? 100,
                      maxLength: truncation?["max_length"] as? Int, padToLength: padding?["Fixed"] as? Int,
                      unknownToken: model["unk_token"] as? String ?? "[UNK]")
    }

    // MARK: Normalisation and pre-tokenisation

    static func isCJK(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v) || (0x2A700...0x2B73F).contains(v)
            || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v) || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }

    static func isWhitespace(_ s: Unicode.Scalar) -> Bool { s == "\t" || s == "\n" || s == "\r" || s.properties.isWhitespace }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format, .unassigned, .privateUse, .surrogate: return true
        default: return false
        }
    }

    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }

    /// BertNormalizer: clean, space out CJK, strip accents (NFD, drop non-spacing marks), lower-case.
    func normalize(_ text: String) -> [Unicode.Scalar] {
        var scalars: [Unicode.Scalar] = []
        for s in text.unicodeScalars {
            if cleanText {
                if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
                if Self.isWhitespace(s) { scalars.append(" "); continue }
            }
            if handleChineseCharacters && Self.isCJK(s.value) { scalars += [" ", s, " "] } else { scalars.append(s) }
        }
        if stripAccents {
            let decomposed = String(String.UnicodeScalarView(scalars)).decomposedStringWithCanonicalMapping.unicodeScalars
            scalars = decomposed.filter { $0.properties.generalCategory != .nonspacingMark }
        }
        if lowercase { scalars = Self.lowercased(scalars) }
        return scalars
    }

    /// Full Unicode lower-casing character by character, as `tokenizers` does it (so Σ is always σ:
    /// no final-sigma rule).
    static func lowercased(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        scalars.flatMap { Array($0.properties.lowercaseMapping.unicodeScalars) }
    }

    /// BertPreTokenizer: words split on whitespace, each punctuation character a word of its own.
    static func words(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = [], current: [Unicode.Scalar] = []
        for s in scalars {
            if isWhitespace(s) {
                if !current.isEmpty { words.append(current); current = [] }
            } else if isPunctuation(s) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([s])
            } else {
                current.append(s)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// Greedy longest-match-first sub-words of one word, or `[UNK]`.
    func wordPieces(_ word: [Unicode.Scalar]) -> [Int] {
        guard word.count <= maxInputCharactersPerWord else { return [unknownID] }
        var pieces: [Int] = [], start = 0
        while start < word.count {
            var end = word.count, found: Int?
            while start < end {
                var piece = String(String.UnicodeScalarView(word[start..<end]))
                if start > 0 { piece = continuingPrefix + piece }
                if let id = vocabulary[piece] { found = id; break }
                end -= 1
            }
            guard let id = found else { return [unknownID] }
            pieces.append(id)
            start = end
        }
        return pieces
    }

    /// The token ids of `text`, without special tokens.
    public func tokenIDs(_ text: String) -> [Int] {
        Self.words(normalize(text)).flatMap(wordPieces)
    }

    /// `[CLS] text [SEP]` (or `[CLS] first [SEP] second [SEP]`), truncated and padded as configured.
    public func encode(_ text: String, pair: String? = nil) -> Encoding {
        var a = tokenIDs(text), b = pair.map(tokenIDs)
        if let maxLength {
            let room = max(0, maxLength - (b == nil ? 2 : 3))
            if var second = b {
                // tokenizers' LongestFirst: keep the shorter whole when it fits in half, share the room otherwise.
                var (n1, n2) = (a.count, second.count)
                let swapped = n1 > n2
                if swapped { swap(&n1, &n2) }
                n2 = n1 > room ? n1 : max(n1, room - n1)
                if n1 + n2 > room { n1 = room / 2; n2 = n1 + room % 2 }
                if swapped { swap(&n1, &n2) }
                a = Array(a.prefix(n1)); second = Array(second.prefix(n2))
                b = second
            } else {
                a = Array(a.prefix(room))
            }
        }
        var ids = [classifierID] + a + [separatorID], types = [Int](repeating: 0, count: ids.count)
        if let b {
            ids += b + [separatorID]
            types += [Int](repeating: 1, count: b.count + 1)
        }
        var mask = [Int](repeating: 1, count: ids.count)
        if let padToLength, ids.count < padToLength {
            let padding = padToLength - ids.count
            ids += [Int](repeating: paddingID, count: padding); types += [Int](repeating: 0, count: padding); mask += [Int](repeating: 0, count: padding)
        }
        return Encoding(inputIDs: ids, attentionMask: mask, tokenTypeIDs: types)
    }
}

/// Why a tokenizer cannot be built.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    case unreadable(String)
    case unsupported(String)
    case missingToken(String)

    public var description: String {
        switch self {
        case let .unreadable(reason): return "cannot read the tokenizer: \(reason)"
        case let .unsupported(what): return "unsupported tokenizer: \(what)"
        case let .missingToken(token): return "the vocabulary has no '\(token)' token"
        }
    }
}
