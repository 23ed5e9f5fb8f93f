/// Why a link could not be made or ended badly. A per-link error: it never
/// takes the node down.
public struct TransportError: AgentFlowError {
    public enum Code: String, Sendable {
        /// This transport cannot reach that kind of address; try another transport.
        case unsupportedAddress = "unsupported_address"
        case connectionRefused = "connection_refused"
        case handshakeFailed = "handshake_failed"
        case linkClosed = "link_closed"
        case messageTooLarge = "message_too_large"
        case protocolViolation = "protocol_violation"
        case timedOut = "timed_out"
        case bindFailed = "bind_failed"
        case shutDown = "shut_down"
    }

    public let kind: Code
    public let message: String
    public let underlying: (any Error)?

    public init(_ kind: Code, _ message: String, underlying: (any Error)? = nil) {
        self.kind = kind
        self.message = message
        self.underlying = underlying
    }

    public var code: String { kind.rawValue }
}
