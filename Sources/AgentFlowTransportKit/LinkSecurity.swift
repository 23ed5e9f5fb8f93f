public import AgentFlowCore
public import AgentFlowTLS
public import Logging
import Synchronization

/// A transport's TLS set-up, made from the node's `TransportSecurity`: the
/// server and client contexts with the transport's ALPN protocol, or nothing
/// at all when TLS is explicitly off.
///
/// `reload()` reads the files again (a renewed certificate, a CA bundle with
/// a new CA) and swaps both contexts at once: new handshakes use the new
/// material, while a link already up keeps the context it was made with
/// (OpenSSL counts the references) and is not dropped.
public struct LinkSecurity: Sendable {
    private final class Contexts: Sendable {
        let current: Mutex<(server: TLSContext, client: TLSContext)?>
        init(_ value: (server: TLSContext, client: TLSContext)?) { current = Mutex(value) }
    }

    private let contexts: Contexts
    private let files: MutualTLSFiles?
    private let alpn: [String]
    public let handshakeTimeout: ConfigDuration

    public var isPlaintext: Bool { files == nil }

    /// Loads the certificates. Plaintext is refused unless `security` says so,
    /// and then logged loudly, once per transport.
    public init(_ security: TransportSecurity, alpn: [String], handshakeTimeout: ConfigDuration, transport: String, logger: Logger) throws {
        self.handshakeTimeout = handshakeTimeout
        self.alpn = alpn
        switch security {
        case .plaintext:
            logger.warning("TLS is OFF for the \(transport) transport (tls.mode: off): links are neither encrypted nor authenticated; anyone who can reach the port can join the mesh")
            files = nil
            contexts = Contexts(nil)
        case .mutualTLS(let files):
            self.files = files
            contexts = Contexts(try Self.load(files, alpn: alpn))
        }
    }

    private static func load(_ files: MutualTLSFiles, alpn: [String]) throws -> (server: TLSContext, client: TLSContext) {
        (try TLSContext(files: files, role: .server, alpn: alpn), try TLSContext(files: files, role: .client, alpn: alpn))
    }

    /// Reads the certificate, key and CA files again and uses them for every
    /// new handshake. On any error (a key that does not match, a half-written
    /// file) the old material stays in use and the error says why.
    public func reload() throws {
        guard let files else { return }
        let fresh = try Self.load(files, alpn: alpn)
        contexts.current.withLock { $0 = fresh }
    }

    /// The handler to put first in a new connection's pipeline, or nil for plaintext.
    public func makeHandler(isServer: Bool) throws -> TLSHandler? {
        guard let current = contexts.current.withLock({ $0 }) else { return nil }
        return try TLSHandler(context: isServer ? current.server : current.client, handshakeTimeout: handshakeTimeout.timeAmount)
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
        return PeerIdentity(certifiedNodeID: proven, remoteAddress: remoteAddress, transport: transport, certificateExpiry: established.peerCertificateExpiry)
    }
}
