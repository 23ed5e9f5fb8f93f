import AgentFlowCore
import COpenSSL
import NIOCore

/// One TLS connection as a byte-in, byte-out state machine: an `SSL*` over
/// `CiphertextBuffers`. Ciphertext from the network goes in with `receive`,
/// ciphertext for the network comes out of `takeOutput`; plaintext goes
/// through `readPlaintext` and `writePlaintext`. No sockets: the NIO handler
/// moves the bytes. Confined to one event loop, hence not Sendable.
final class TLSConnection {
    private let ssl: OpaquePointer
    /// The ciphertext both ways; the `SSL*`'s BIO points into it (and is freed with `ssl`, first).
    private let buffers: CiphertextBuffers
    let context: TLSContext

    enum Step: Equatable {
        /// Needs more bytes from the peer.
        case wantRead
        /// The operation completed.
        case done
        /// The peer closed the TLS session cleanly (close_notify).
        case closed
    }

    init(context: TLSContext) throws {
        OpenSSLError.drainQueue()
        guard let ssl = SSL_new(context.context) else { throw OpenSSLError.drain("creating an SSL connection") }
        let buffers = CiphertextBuffers()
        guard let bio = buffers.makeBIO() else {
            SSL_free(ssl)
            throw OpenSSLError.drain("creating the ciphertext BIO")
        }
        // One BIO both ways: `SSL_set_bio` then takes the one reference.
        SSL_set_bio(ssl, bio, bio)
        if context.role == .server { SSL_set_accept_state(ssl) } else { SSL_set_connect_state(ssl) }
        self.ssl = ssl
        self.buffers = buffers
        self.context = context
    }

    deinit { SSL_free(ssl) }

    /// Feeds ciphertext received from the network (kept as it is, not copied).
    func receive(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        buffers.receive(bytes)
    }

    /// Ciphertext received and not yet read by OpenSSL.
    var pendingInput: Int { buffers.incoming.readableBytes }

    /// Runs the handshake as far as the bytes received so far allow.
    func handshake() throws(TLSHandshakeError) -> Step {
        OpenSSLError.drainQueue()
        let result = SSL_do_handshake(ssl)
        if result == 1 { return .done }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .wantRead
        case SSL_ERROR_ZERO_RETURN: throw TLSHandshakeError(reason: "the peer closed the connection during the handshake", details: [])
        default: throw handshakeError()
        }
    }

    /// What went wrong in a failed handshake, in words: the certificate
    /// verification result when that was the cause, then OpenSSL's queue.
    private func handshakeError() -> TLSHandshakeError {
        let reasons = OpenSSLError.drainQueue()
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK {
            let text = String(cString: X509_verify_cert_error_string(verify))
            return TLSHandshakeError(reason: "peer certificate refused: \(text)", details: reasons)
        }
        let reason = reasons.last.map(Self.shortReason) ?? "the TLS handshake failed"
        return TLSHandshakeError(reason: reason, details: reasons)
    }

    /// `error:0A000412:SSL routines::sslv3 alert bad certificate` → `sslv3 alert bad certificate`.
    static func shortReason(_ reason: String) -> String {
        guard let range = reason.firstRange(of: "::") else { return reason }
        return String(reason[range.upperBound...])
    }

    /// Decrypts available plaintext into `buffer` (which has room for `capacity` bytes).
    /// Returns the byte count, 0 when more ciphertext is needed, or nil when the peer sent close_notify.
    func readPlaintext(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        let count = SSL_read(ssl, buffer.baseAddress, Int32(buffer.count))
        if count > 0 { return Int(count) }
        switch SSL_get_error(ssl, count) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return 0
        case SSL_ERROR_ZERO_RETURN: return nil
        default:
            let reasons = OpenSSLError.drainQueue()
            throw TLSHandshakeError(reason: reasons.last.map(Self.shortReason) ?? "TLS read failed", details: reasons)
        }
    }

    /// Encrypts plaintext into the outgoing buffer (which never blocks, so it all goes in).
    func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws {
        // Room for the records at once (per 16 KiB: 5 header bytes, a 16-byte tag, the type byte).
        buffers.outgoing.reserveCapacity(minimumWritableBytes: bytes.count + (bytes.count / 16_384 + 1) * 32)
        var offset = 0
        while offset < bytes.count {
            let written = SSL_write(ssl, bytes.baseAddress! + offset, Int32(min(bytes.count - offset, 1 << 20)))
            guard written > 0 else {
                let reasons = OpenSSLError.drainQueue()
                throw TLSHandshakeError(reason: reasons.last.map(Self.shortReason) ?? "TLS write failed", details: reasons)
            }
            offset += Int(written)
        }
    }

    /// Queues close_notify.
    func shutdown() {
        _ = SSL_shutdown(ssl)
        OpenSSLError.drainQueue()
    }

    /// Everything sealed for the network so far (nil when nothing is), handed over whole.
    func takeOutput() -> ByteBuffer? { buffers.takeOutgoing() }

    /// The node id the peer's verified certificate names (after the handshake).
    var peerNodeID: NodeID? {
        guard let certificate = SSL_get0_peer_certificate(ssl) else { return nil }
        return CertificateInspector.nodeID(of: certificate)
    }

    /// When the peer's certificate expires (Unix seconds).
    var peerNotAfter: Int64? {
        guard let certificate = SSL_get0_peer_certificate(ssl) else { return nil }
        return CertificateInspector.notAfter(of: certificate)
    }

    var peerCommonName: String? {
        guard let certificate = SSL_get0_peer_certificate(ssl) else { return nil }
        return CertificateInspector.commonName(of: certificate)
    }

    /// The protocol ALPN settled on, if any.
    var negotiatedALPN: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }
}

@available(*, unavailable)
extension TLSConnection: Sendable {}

