import Foundation
import Hummingbird

/// An error the API reports as an RFC 9457 problem details document (`type`, `title`, `status`, `detail`).
public struct ServiceError: Error, CustomStringConvertible, Sendable, Equatable {
    public var status: HTTPResponse.Status
    /// A stable identifier of the kind of problem (the `type` URI's last segment).
    public var kind: String
    public var title: String
    public var detail: String

    public init(status: HTTPResponse.Status, kind: String, title: String, detail: String) {
        self.status = status; self.kind = kind; self.title = title; self.detail = detail
    }

    public var description: String { "\(title): \(detail)" }

    public static func badRequest(_ detail: String) -> Self { .init(status: .badRequest, kind: "bad-request", title: "Bad request", detail: detail) }
    public static func invalidUpload(_ detail: String) -> Self { .init(status: .unprocessableContent, kind: "invalid-upload", title: "Invalid training set", detail: detail) }
    public static func invalidJob(_ detail: String) -> Self { .init(status: .unprocessableContent, kind: "invalid-job", title: "Invalid job request", detail: detail) }
    public static func guarded(_ detail: String) -> Self { .init(status: .forbidden, kind: "guarded-tensor", title: "Tensor is guarded by the publisher", detail: detail) }
    public static func unauthorized(_ detail: String) -> Self { .init(status: .unauthorized, kind: "unauthorized", title: "Unauthorized", detail: detail) }
    public static func notFound(_ detail: String) -> Self { .init(status: .notFound, kind: "not-found", title: "Not found", detail: detail) }
    public static func conflict(_ detail: String) -> Self { .init(status: .conflict, kind: "conflict", title: "Conflict", detail: detail) }
    public static func tooLarge(_ detail: String) -> Self { .init(status: .contentTooLarge, kind: "too-large", title: "Upload too large", detail: detail) }
    public static func unsupportedMediaType(_ detail: String) -> Self { .init(status: .unsupportedMediaType, kind: "unsupported-media-type", title: "Unsupported media type", detail: detail) }
}

extension ServiceError: HTTPResponseError {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var object: [String: Any] = ["type": "https://permafrost.dev/problems/\(kind)", "title": title, "status": Int(status.code), "detail": detail]
        object["instance"] = request.uri.path
        let body = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"permafrost\"" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
