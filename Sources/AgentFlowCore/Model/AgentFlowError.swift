/// The shape of every AgentFlow error: a stable code a program can switch on,
/// a message a person can act on, and the lower-level cause when there is one.
///
/// Module errors (`ConfigError`, `TransportError`, the C library errors) conform,
/// so a caller that only wants to log can treat them all alike.
public protocol AgentFlowError: Error, CustomStringConvertible, Sendable {
    /// Stable, machine-readable, snake_case (`unknown_key`, `handshake_failed`).
    var code: String { get }
    /// What went wrong and, where possible, what to do about it.
    var message: String { get }
    /// The error underneath, if any (an OpenSSL message, a POSIX error, …).
    var underlying: (any Error)? { get }
}

extension AgentFlowError {
    public var underlying: (any Error)? { nil }

    public var description: String {
        if let underlying {
            return "\(message) (\(underlying))"
        }
        return message
    }
}
