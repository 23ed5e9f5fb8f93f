public import AgentFlowCore
public import AgentFlowTLS
public import Logging

/// A transport's TLS set-up, made once from the node's `TransportSecurity`:
/// the server and client contexts with the transport's ALPN protocol, or
/// nothing at all when TLS is explicitly off.
public struct LinkSecurity: Sendable {
    let server: TLSContext?
    let client: TLSContext?
    public let handshakeTimeout: ConfigDuration

    public var isPlaintext: Bool { server == nil }

    /// Loads the certificates. Plaintext is refused unless `security` says so,
    /// and then logged loudly, once per transport.
    public init(_ security: TransportSecurity, alpn: [String], handshakeTimeout: ConfigDuration, transport: String, logger: Logger) throws {
        self.handshakeTimeout = handshakeTimeout
        switch security {
        case .plaintext:
            logger.warning("TLS is OFF for the \(transport) transport (tls.mode: off): links are neither encrypted nor authenticated; anyone who can reach the port can join the mesh")
            server = nil
            client = nil
        case .mutualTLS(let files):
            server = try TLSContext(files: files, role: .server, alpn: alpn)
            client = try TLSContext(files: files, role: .client, alpn: alpn)
        }
    }

    /// The handler to put first in a new connection's pipeline, or nil for plaintext.
    public func makeHandler(isServer: Bool) throws -> TLSHandler? {
        guard let context = isServer ? server : client else { return nil }
        return try TLSHandler(context: context, handshakeTimeout: handshakeTimeout.timeAmount)
    }

    /// Checks what a handshake proved against what the caller expected, and
    /// turns it into the link's `PeerIdentity`.
    public static func admit(
        _ established: TLSEstablished?, expectedPeer: NodeID?, remoteAddress: String, transport: String
    ) throws(TransportError) -> PeerIdentity {
        guard let established else {
            return PeerIdentity(certifiedNodeID: nil, remoteAddress: remoteAddress, transport: transport)
        }
        guard let proven = established.peerNodeID else {
            throw TransportError(.handshakeFailed, "the certificate of \(remoteAddress) names no node id (common name \(established.peerCommonName.map { "'\($0)'" } ?? "missing"))")
        }
        if let expectedPeer, expectedPeer != proven {
            throw TransportError(.handshakeFailed, "the certificate of \(remoteAddress) is for node '\(proven)', not the expected '\(expectedPeer)'")
        }
        return PeerIdentity(certifiedNodeID: proven, remoteAddress: remoteAddress, transport: transport)
    }
}
