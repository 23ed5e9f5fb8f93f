public import AgentFlowCore
import COpenSSL

/// One configured `SSL_CTX`: the cluster CA to verify peers against, this
/// node's certificate and key, TLS 1.3 only, peers always verified, and the
/// ALPN protocol the transport speaks. Built once per transport and shared by
/// all its connections.
///
/// `@unchecked Sendable`: the `SSL_CTX` is fully configured in `init` and then
/// only passed to `SSL_new`, which OpenSSL documents as safe to call from many
/// threads on one context. Nothing mutates it after `init`.
public final class TLSContext: @unchecked Sendable {
    public enum Role: Sendable { case client, server }

    let context: OpaquePointer
    public let role: Role
    /// The node id this node's own certificate names.
    public private(set) var localNodeID: NodeID
    /// ALPN in wire format (length-prefixed names), kept alive for the selection callback.
    private let alpnWire: UnsafeMutableBufferPointer<UInt8>
    public let alpnProtocols: [String]

    /// Loads the PEM files and configures the context. Every failure names the
    /// file and carries OpenSSL's reason (a key that does not match the
    /// certificate, an unreadable CA file, a certificate without a node id).
    public init(files: MutualTLSFiles, role: Role, alpn: [String]) throws {
        OpenSSLError.drainQueue()
        guard let context = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw OpenSSLError.drain("creating an SSL_CTX")
        }
        self.context = context
        self.role = role
        self.alpnProtocols = alpn
        var wire: [UInt8] = []
        for name in alpn {
            wire.append(UInt8(name.utf8.count))
            wire.append(contentsOf: name.utf8)
        }
        // The selection callback gets one pointer: a 2-byte length, then the list.
        alpnWire = .allocate(capacity: 2 + wire.count)
        _ = alpnWire.initialize(from: [UInt8(wire.count & 0xff), UInt8(wire.count >> 8)] + wire)
        // Until every stored property is set, `deinit` would not run: set a placeholder id first.
        localNodeID = NodeID("unset")!

        guard agentflow_SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION) == 1 else {
            throw OpenSSLError.drain("requiring TLS 1.3")
        }
        // Links are long-lived: resumption buys nothing, and tickets would add a post-handshake message.
        SSL_CTX_set_num_tickets(context, 0)
        // AES-128-GCM first: TLS 1.3's mandatory suite, and ~10% cheaper here than AES-256-GCM,
        // which OpenSSL would pick by default; a bulk link spends a third of its time sealing and opening records.
        guard SSL_CTX_set_ciphersuites(context, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") == 1 else {
            throw OpenSSLError.drain("setting the TLS 1.3 cipher suites")
        }
        _ = agentflow_SSL_CTX_set_mode(context, Int(SSL_MODE_RELEASE_BUFFERS))

        guard SSL_CTX_load_verify_locations(context, files.caCertificateFile, nil) == 1 else {
            throw OpenSSLError.drain("loading the cluster CA from \(files.caCertificateFile)", code: "tls_config")
        }
        guard SSL_CTX_use_certificate_chain_file(context, files.certificateFile) == 1 else {
            throw OpenSSLError.drain("loading this node's certificate from \(files.certificateFile)", code: "tls_config")
        }
        guard SSL_CTX_use_PrivateKey_file(context, files.privateKeyFile, SSL_FILETYPE_PEM) == 1 else {
            throw OpenSSLError.drain("loading this node's private key from \(files.privateKeyFile)", code: "tls_config")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw OpenSSLError.drain("\(files.privateKeyFile) is not the key of \(files.certificateFile)", code: "tls_config")
        }
        // Both sides are verified; a server refuses a client that sends no certificate.
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)

        guard let own = SSL_CTX_get0_certificate(context) else {
            throw OpenSSLError.drain("reading back \(files.certificateFile)", code: "tls_config")
        }
        guard let ownID = CertificateInspector.nodeID(of: own) else {
            throw OpenSSLError(code: "tls_config", "\(files.certificateFile) names no node id in its common name; issue node certificates with `agentflow certs node ID`", reasons: [])
        }
        localNodeID = ownID

        if !alpn.isEmpty {
            switch role {
            case .client:
                // Unlike most OpenSSL functions, this one returns 0 on success.
                guard SSL_CTX_set_alpn_protos(context, alpnWire.baseAddress! + 2, UInt32(wire.count)) == 0 else {
                    throw OpenSSLError.drain("setting ALPN")
                }
            case .server:
                SSL_CTX_set_alpn_select_cb(context, selectALPN, UnsafeMutableRawPointer(alpnWire.baseAddress))
            }
        }
    }

    deinit {
        SSL_CTX_free(context)
        alpnWire.deallocate()
    }

}

/// Picks the server's protocol from the client's offer; no overlap fails the
/// handshake (a gRPC client on a TCP-framing port is refused right there).
/// `arg` is the context's buffer: a 2-byte little-endian length, then the list.
private func selectALPN(
    _ ssl: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?, _ outLength: UnsafeMutablePointer<UInt8>?,
    _ offered: UnsafePointer<UInt8>?, _ offeredLength: UInt32, _ arg: UnsafeMutableRawPointer?
) -> Int32 {
    guard let arg, let offered, let out, let outLength else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    let bytes = arg.assumingMemoryBound(to: UInt8.self)
    let serverLength = Int(bytes[0]) | Int(bytes[1]) << 8
    let server = bytes + 2
    var chosen: UnsafeMutablePointer<UInt8>?
    let result = SSL_select_next_proto(&chosen, outLength, server, UInt32(serverLength), offered, offeredLength)
    guard result == OPENSSL_NPN_NEGOTIATED, let chosen else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    out.pointee = UnsafePointer(chosen)
    return SSL_TLSEXT_ERR_OK
}
