public import AgentFlowCore
public import HTTPTypes

/// An API error: the HTTP status, a stable code and a message naming the field or reason.
public struct SignalAPIError: AgentFlowError {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    /// For 405: the methods the route allows (the `Allow` header).
    public var allow: String?
    /// For 429: seconds until a retry can succeed (the `Retry-After` header).
    public var retryAfterSeconds: Int?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, allow: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.allow = allow
    }

    static func badRequest(field: String, _ problem: String) -> SignalAPIError {
        SignalAPIError(.badRequest, "invalid_field", "\(field): \(problem)")
    }

    static let unauthorized = SignalAPIError(
        .unauthorized, "unauthorized", "missing or wrong cluster token: send `Authorization: Bearer <token>`")
    static func forbiddenSecret(_ id: String) -> SignalAPIError {
        SignalAPIError(.forbidden, "wrong_secret", "node \(id) is registered with another secret; only its owner can change it")
    }
    static func unknownNode(_ id: String) -> SignalAPIError {
        SignalAPIError(.notFound, "unknown_node", "node \(id) is not registered (never, or evicted after its TTL): re-register with POST /register")
    }
}
