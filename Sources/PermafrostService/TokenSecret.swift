import Foundation
import PermafrostIO

/// Bearer-token secrets: 32 random bytes, URL-safe base64, prefixed so they are recognisable in logs
/// and secret scanners. Only their SHA-256 is ever stored.
public enum TokenSecret {
    public static let prefix = "pft_"

    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return prefix + text
    }

    public static func digest(_ secret: String) -> String {
        sha256Hex(Data(secret.utf8))
    }
}
