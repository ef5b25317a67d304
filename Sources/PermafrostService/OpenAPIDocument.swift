import Foundation

/// The API description (`openapi.yaml` at the repository root links to this resource).
enum OpenAPIDocument {
    static let yaml: String = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"),
              let text = try? String(contentsOf: url, encoding: .utf8) else { return "# openapi.yaml is missing from this build\n" }
        return text
    }()
}
