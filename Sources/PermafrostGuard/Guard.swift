import Crypto
import Foundation
import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Why a guard was refused.
public enum GuardError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(String)
    case unsigned
    case badSignature
    case untrustedKey(expected: String, found: String)
    case baseMismatch(expected: String, actual: String)
    case unknownTensor(String)
    case tensorChanged(names: [String])
    case badKey(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read '\(path)': \(reason)"
        case let .malformed(reason): return "the guard manifest is malformed: \(reason)"
        case .unsigned: return "the guard is not signed"
        case .badSignature: return "the guard's signature does not verify: the manifest was modified or signed with another key"
        case let .untrustedKey(expected, found): return "the guard is signed by key \(found), not by the trusted publisher key \(expected)"
        case let .baseMismatch(expected, actual): return "the guard was learnt for a base checkpoint with SHA-256 \(expected), but this base has \(actual)"
        case let .unknownTensor(name): return "the guard freezes '\(name)', which the model does not have"
        case let .tensorChanged(names): return "guarded tensor(s) differ from the base: " + names.prefix(5).map { "'\($0)'" }.joined(separator: ", ") + (names.count > 5 ? " and \(names.count - 5) more" : "")
        case let .badKey(reason): return "invalid key: \(reason)"
        }
    }
}

/// SHA-256 of a tensor's Float32 little-endian bytes (what an F32 checkpoint stores), hex.
public func tensorDigest(_ tensor: Tensor) -> String {
    tensor.withUnsafeBufferPointer { values in
        var hasher = SHA256()
        let raw = UnsafeRawBufferPointer(values)
        hasher.update(bufferPointer: raw)
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// A learnt guard: which tensors a publisher freezes, bound to one base checkpoint by digests and
/// signed with Ed25519. Anyone holding the publisher's public key can check that a fine-tuned model
/// kept every guarded tensor bit-identical.
public struct GuardManifest: Codable, Equatable, Sendable {
    public var format = "permafrost-guard-v1"
    /// SHA-256 of the base checkpoint file.
    public var baseSHA256: String
    /// Guarded tensor names, sorted.
    public var frozen: [String]
    /// SHA-256 of each guarded tensor's Float32 bytes in the base.
    public var frozenSHA256: [String: String]
    /// Fraction of tensors guarded.
    public var freezeRatio: Double
    /// Fraction of parameters (scalars) guarded.
    public var freezeRatioParameters: Double
    /// How the guard was learnt (free-form, recorded for reproducibility).
    public var settings: [String: String]
    /// Ed25519 public key (base64, raw 32 bytes) of the signer.
    public var publicKey: String?
    /// Ed25519 signature (base64) of ``signedBytes()``.
    public var signature: String?

    enum CodingKeys: String, CodingKey {
        case format, baseSHA256 = "base_sha256", frozen, frozenSHA256 = "frozen_sha256", freezeRatio = "freeze_ratio"
        case freezeRatioParameters = "freeze_ratio_params", settings, publicKey = "public_key", signature
    }

    /// A manifest for `frozen` tensors of `model`, whose weights are those of the base file with digest `baseSHA256`.
    public init(model: Module, frozen: Set<String>, baseSHA256: String, settings: [String: String]) throws(GuardError) {
        let parameters = Dictionary(model.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        var digests: [String: String] = [:]
        var frozenScalars = 0
        for name in frozen {
            guard let p = parameters[name] else { throw .unknownTensor(name) }
            digests[name] = tensorDigest(p.value)
            frozenScalars += p.value.count
        }
        self.baseSHA256 = baseSHA256
        self.frozen = frozen.sorted()
        frozenSHA256 = digests
        freezeRatio = Double(frozen.count) / Double(Swift.max(parameters.count, 1))
        freezeRatioParameters = Double(frozenScalars) / Double(Swift.max(model.parameterCount, 1))
        self.settings = settings
    }

    /// The canonical bytes the signature covers: the manifest without its signature, as JSON with
    /// sorted keys and no insignificant whitespace.
    public func signedBytes() -> Data {
        var copy = self
        copy.signature = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(copy)) ?? Data()
    }

    /// Signs with `key` (records its public key).
    public mutating func sign(with key: Curve25519.Signing.PrivateKey) throws {
        publicKey = key.publicKey.rawRepresentation.base64EncodedString()
        signature = try key.signature(for: signedBytes()).base64EncodedString()
    }

    /// Checks the signature, and that the signer is `trustedKey` when given (base64 raw public key).
    public func verifySignature(trustedKey: String? = nil) throws(GuardError) {
        guard let signature, let publicKey else { throw .unsigned }
        if let trustedKey, trustedKey != publicKey { throw .untrustedKey(expected: trustedKey, found: publicKey) }
        guard let keyBytes = Data(base64Encoded: publicKey), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes),
              let signatureBytes = Data(base64Encoded: signature) else { throw .badSignature }
        guard key.isValidSignature(signatureBytes, for: signedBytes()) else { throw .badSignature }
    }

    /// Checks that `baseURL` is the checkpoint this guard was learnt for.
    public func verifyBase(_ baseURL: URL) throws(GuardError) {
        let actual: String
        do { actual = try sha256Hex(of: baseURL) } catch { throw .unreadable(path: baseURL.path, reason: error.description) }
        guard actual == baseSHA256 else { throw .baseMismatch(expected: baseSHA256, actual: actual) }
    }

    /// Names of guarded tensors whose current values differ from the base (empty: all bit-identical).
    public func changedTensors(in model: Module) throws(GuardError) -> [String] {
        let parameters = Dictionary(model.namedParameters().map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        var changed: [String] = []
        for name in frozen {
            guard let p = parameters[name] else { throw .unknownTensor(name) }
            if tensorDigest(p.value) != frozenSHA256[name] { changed.append(name) }
        }
        return changed
    }

    /// Names of guarded tensors whose values in a full checkpoint file differ from the base.
    public func changedTensors(in file: SafetensorsFile) throws(GuardError) -> [String] {
        var changed: [String] = []
        for name in frozen {
            guard let tensor = try? file.tensor(named: name) else { throw .unknownTensor(name) }
            if tensorDigest(tensor) != frozenSHA256[name] { changed.append(name) }
        }
        return changed
    }

    /// A human-readable summary: format, base digest, frozen share, signature state, settings and
    /// every guarded tensor's name. `name` labels the first line (usually the file's path).
    public func summary(named name: String) -> String {
        let signed: String
        do { try verifySignature(); signed = "valid signature by \(publicKey ?? "")" } catch { signed = error.description }
        let lines = [
            "\(name): \(format)",
            "  base SHA-256   \(baseSHA256)",
            "  frozen         \(frozen.count) tensors (\(String(format: "%.1f", freezeRatio * 100))% of tensors, \(String(format: "%.1f", freezeRatioParameters * 100))% of parameters)",
            "  signature      \(signed)",
            "  settings       \(settings.keys.sorted().map { "\($0)=\(settings[$0] ?? "")" }.joined(separator: " "))",
        ]
        return (lines + frozen.map { "  \($0)" }).joined(separator: "\n")
    }

    /// The publisher's plan: enforced, so a user's plan can add frozen tensors but never remove these.
    public var plan: FreezePlan { FreezePlan(frozen: Set(frozen), isEnforced: true) }

    // MARK: Files

    public static func load(from url: URL) throws(GuardError) -> GuardManifest {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: url.path, reason: (error as NSError).localizedDescription) }
        do { return try JSONDecoder().decode(GuardManifest.self, from: data) } catch {
            throw .malformed("\(error)")
        }
    }

    public func write(to url: URL) throws {
        try AtomicFile.writeJSON(self, to: url)
    }
}

/// Ed25519 key files: base64 of the raw 32-byte keys.
public enum GuardKeys {
    public static func generate(privateKeyURL: URL, publicKeyURL: URL) throws -> String {
        let key = Curve25519.Signing.PrivateKey()
        try AtomicFile.write(Data((key.rawRepresentation.base64EncodedString() + "\n").utf8), to: privateKeyURL)
        chmod(privateKeyURL.path, 0o600)
        let publicKey = key.publicKey.rawRepresentation.base64EncodedString()
        try AtomicFile.write(Data((publicKey + "\n").utf8), to: publicKeyURL)
        return publicKey
    }

    public static func privateKey(from url: URL) throws(GuardError) -> Curve25519.Signing.PrivateKey {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw .unreadable(path: url.path, reason: "no such file") }
        guard let raw = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)),
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else { throw .badKey("'\(url.path)' is not a base64 Ed25519 private key") }
        return key
    }

    /// A public key file's contents (validated), base64.
    public static func publicKey(from url: URL) throws(GuardError) -> String {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw .unreadable(path: url.path, reason: "no such file") }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let raw = Data(base64Encoded: trimmed), (try? Curve25519.Signing.PublicKey(rawRepresentation: raw)) != nil else {
            throw .badKey("'\(url.path)' is not a base64 Ed25519 public key")
        }
        return trimmed
    }
}
