public import AgentFlowCore

/// A TLS handshake (or a later TLS record) failed: a bad or missing
/// certificate, another CA, a protocol error. `reason` is one line for logs
/// and metrics; `details` are OpenSSL's own messages.
public struct TLSHandshakeError: AgentFlowError {
    public var code: String { "tls_handshake_failed" }
    public let reason: String
    public let details: [String]
    public var message: String { reason }

    public init(reason: String, details: [String]) {
        self.reason = reason
        self.details = details
    }
}
