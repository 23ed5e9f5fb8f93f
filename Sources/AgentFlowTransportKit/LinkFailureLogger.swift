import AgentFlowTLS
import CoreMetrics
import Logging
import NIOCore

/// Logs and counts refused TLS handshakes (with the reason) right behind the
/// TLS handler, then lets the error travel on.
///
/// Metric: `agentflow_link_handshake_failures_total{transport, role, reason}`.
final class LinkFailureLogger: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let transport: String
    let logger: Logger
    let role: String
    let metrics: any MetricsFactory

    init(transport: String, logger: Logger, role: String, metrics: any MetricsFactory) {
        self.transport = transport
        self.logger = logger
        self.role = role
        self.metrics = metrics
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? TLSHandshakeError {
            let remote = context.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
            logger.warning("\(transport): TLS handshake with \(remote) (\(role)) refused: \(error.reason)")
            Counter(label: "agentflow_link_handshake_failures_total", dimensions: [
                ("transport", transport), ("role", role), ("reason", Self.category(error.reason)),
            ], factory: metrics).increment()
        }
        context.fireErrorCaught(error)
    }

    /// A small, fixed set of reasons, so the metric's label stays bounded.
    static func category(_ reason: String) -> String {
        let table: [(String, String)] = [
            ("expired", "expired"), ("not yet valid", "not_yet_valid"), ("did not return a certificate", "no_certificate"),
            ("certificate required", "no_certificate"), ("unable to get local issuer", "unknown_ca"), ("unknown ca", "unknown_ca"),
            ("self-signed", "unknown_ca"), ("self signed", "unknown_ca"), ("no TLS handshake within", "timeout"),
            ("wrong version number", "not_tls"), ("packet length too long", "not_tls"), ("no application protocol", "alpn"),
            ("closed the connection", "peer_closed"),
        ]
        for (needle, category) in table where reason.contains(needle) { return category }
        return "other"
    }
}

@available(*, unavailable)
extension LinkFailureLogger: Sendable {}
