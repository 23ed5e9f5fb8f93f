import AgentFlowCore
import AgentFlowTLS
import NIOCore
import NIOPosix

/// Dials one address, sends a TLS ClientHello, and says what answered:
/// how the signal server tells a node whether the outside can reach its P2P
/// port. It reads at most the first record header and closes; it never
/// completes a handshake (it has no client certificate to offer).
struct TLSDialBack: Sendable {
    enum Outcome: String, Sendable, Codable {
        /// A TLS server answered (a ServerHello, or a TLS alert).
        case reachable
        /// The connection was refused (nothing listens, or a firewall rejects).
        case refused
        /// No connection, or no answer, within the timeout (a firewall drops, or no port forward).
        case timedOut = "timed_out"
        /// Something answered that is not TLS.
        case notTLS = "not_tls"
        /// The connection was accepted, then closed without an answer.
        case closed
        /// Not dialled: the address is not the requester's own.
        case notAllowed = "not_allowed"
    }

    var timeout: Duration

    /// The first bytes of a TLS 1.3 ClientHello (TLS 1.2 suites too): enough for
    /// any TLS server to answer with a ServerHello or an alert.
    static func clientHello() -> [UInt8] {
        let random = (try? OpenSSLLibrary.randomBytes(32 + 32 + 32)) ?? [UInt8](repeating: 7, count: 96)
        func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
        func ext(_ type: Int, _ body: [UInt8]) -> [UInt8] { u16(type) + u16(body.count) + body }
        let suites: [UInt8] = [0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xC0, 0x2B, 0xC0, 0x2F, 0xC0, 0x2C, 0xC0, 0x30]
        let groups: [UInt8] = [0x00, 0x1D, 0x00, 0x17, 0x00, 0x18]
        let signatures: [UInt8] = [0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05, 0x05, 0x01, 0x08, 0x06, 0x06, 0x01, 0x08, 0x07]
        var extensions: [UInt8] = []
        extensions += ext(0x002B, [4, 0x03, 0x04, 0x03, 0x03])  // supported_versions: 1.3, 1.2
        extensions += ext(0x000A, u16(groups.count) + groups)
        extensions += ext(0x000D, u16(signatures.count) + signatures)
        extensions += ext(0x0033, u16(36) + [0x00, 0x1D] + u16(32) + Array(random[64..<96]))  // key_share: x25519
        extensions += ext(0x002D, [1, 1])  // psk_key_exchange_modes: psk_dhe_ke
        extensions += ext(0x000B, [1, 0])  // ec_point_formats: uncompressed
        var hello: [UInt8] = [0x03, 0x03] + Array(random[0..<32]) + [32] + Array(random[32..<64])
        hello += u16(suites.count) + suites + [1, 0] + u16(extensions.count) + extensions
        let handshake: [UInt8] = [0x01, 0, UInt8(hello.count >> 8), UInt8(hello.count & 0xFF)] + hello
        return [0x16, 0x03, 0x01] + u16(handshake.count) + handshake
    }

    /// What the first bytes of an answer say.
    static func classify(firstBytes: [UInt8]) -> (Outcome, String) {
        guard firstBytes.count >= 3 else { return (.notTLS, "answered \(firstBytes.count) byte(s) that are not a TLS record") }
        let isTLSVersion = firstBytes[1] == 0x03 && firstBytes[2] <= 0x04
        switch firstBytes[0] {
        case 0x16 where isTLSVersion: return (.reachable, "a TLS server answered the ClientHello")
        case 0x15 where isTLSVersion: return (.reachable, "a TLS server answered with an alert")
        default:
            let printable = firstBytes.prefix(16).allSatisfy { (0x20...0x7E).contains($0) || $0 == 0x0D || $0 == 0x0A }
            let shown = printable ? "\"\(String(decoding: firstBytes.prefix(16), as: UTF8.self).trimmingWhitespace)\"" : firstBytes.prefix(8).map(\.hexByte).joined(separator: " ")
            return (.notTLS, "something that is not TLS answered: \(shown)")
        }
    }

    func dial(_ address: SocketAddress) async -> (Outcome, String) {
        let timeoutAmount = TimeAmount.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(timeoutAmount)
                .connect(to: address) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
        } catch let error as ChannelError {
            if case .connectTimeout = error { return (.timedOut, "no TCP connection within \(timeout)") }
            return (.refused, "connect failed: \(error)")
        } catch let error as IOError where error.errnoCode == ECONNREFUSED {
            return (.refused, "connection refused: nothing listens there, or a firewall rejects")
        } catch let error as NIOConnectionError {
            let refused = error.connectionErrors.contains { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
            return refused ? (.refused, "connection refused: nothing listens there, or a firewall rejects") : (.timedOut, "connect failed: \(error)")
        } catch {
            return (.refused, "connect failed: \(error)")
        }
        let hello = Self.clientHello()
        let timeout = self.timeout
        // A server that speaks first (SSH, SMTP) may answer and close before the
        // ClientHello is written: read from the start, and judge by what arrived.
        do {
            return try await channel.executeThenClose { inbound, outbound in
                try await withThrowingTaskGroup(of: (Outcome, String)?.self) { group in
                    group.addTask {
                        var received: [UInt8] = []
                        do {
                            for try await buffer in inbound {
                                received += buffer.readableBytesView
                                if received.count >= 3 { return Self.classify(firstBytes: received) }
                            }
                        } catch where !received.isEmpty {
                            return Self.classify(firstBytes: received)
                        }
                        return received.isEmpty ? (.closed, "the connection was accepted, then closed without an answer") : Self.classify(firstBytes: received)
                    }
                    group.addTask {
                        try? await outbound.write(ByteBuffer(bytes: hello))
                        return nil
                    }
                    group.addTask {
                        try await Task.sleep(for: timeout)
                        return (.timedOut, "connected, but no answer to a TLS ClientHello within \(timeout)")
                    }
                    defer { group.cancelAll() }
                    while let next = try await group.next() {
                        if let next { return next }
                    }
                    return (.closed, "the connection ended without an answer")
                }
            }
        } catch {
            return (.closed, "the connection failed after it was accepted: \(error)")
        }
    }
}
