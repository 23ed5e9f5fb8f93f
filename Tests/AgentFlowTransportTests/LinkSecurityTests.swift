import AgentFlowCore
import AgentFlowGRPC
import AgentFlowTCP
import Prometheus
import AgentFlowInMemory
import AgentFlowProto
import AgentFlowTLS
import AgentFlowTransportKit
import Foundation
import NIOCore
import NIOPosix
import Testing

/// Refusals at the door of every socket transport: bad certificates, garbage
/// bytes, silent half-open connections. After each, the listener still serves.
@Suite("Link security and robustness", .serialized)
struct LinkSecurityTests {
    let pki: TestPKI
    let network = InMemoryNetwork()

    init() throws { pki = try TestPKI() }

    static let socketKinds = TransportKind.allCases.filter(\.usesSockets)

    enum BadCertificate: String, CaseIterable, CustomStringConvertible {
        case otherCA, expired, notYetValid, wrongNodeID, caCertificateAsNodeCertificate
        var description: String { rawValue }
    }

    /// Makes the client's security for one bad case.
    func badSecurity(_ bad: BadCertificate) throws -> (TransportSecurity, expectedPeer: NodeID?) {
        switch bad {
        case .otherCA:
            let other = try CertificateAuthority.makeCA(commonName: "Some other CA")
            return (try pki.security(for: "client", issuer: other), nil)
        case .expired:
            return (try pki.security(for: "client", validity: .init(notBeforeOffset: -7_200, notAfterOffset: -3_600)), nil)
        case .notYetValid:
            return (try pki.security(for: "client", validity: .init(notBeforeOffset: 3_600, notAfterOffset: 7_200)), nil)
        case .wrongNodeID:
            // A valid certificate, but the dialler expects another node at that address.
            return (try pki.security(for: "client"), NodeID("someone-else"))
        case .caCertificateAsNodeCertificate:
            // The CA's own certificate cannot act as a node (it is not issued for a node, and CA:TRUE).
            try pki.write("ca-as-node.key", pki.ca.privateKeyPEM)
            return (.mutualTLS(MutualTLSFiles(caCertificateFile: pki.caFile, certificateFile: pki.caFile, privateKeyFile: pki.directory + "/ca-as-node.key")), nil)
        }
    }

    @Test("bad certificates are refused at the handshake; the listener keeps serving",
          arguments: socketKinds, BadCertificate.allCases)
    func badCertificates(kind: TransportKind, bad: BadCertificate) async throws {
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network))
        let (security, expected) = try badSecurity(bad)
        do {
            let client = try kind.make(node: "client", pki: pki, network: network, security: security)
            await #expect(throws: TransportError.self) {
                _ = try await client.connect(to: server.address, expectedPeer: expected)
            }
        } catch let error as OpenSSLError {
            // Refused even earlier: the bad certificate cannot be loaded as a node's own.
            #expect(bad == .caCertificateAsNodeCertificate, "\(error)")
        }
        if bad != .wrongNodeID {
            #expect(await server.accepted.next(timeout: .milliseconds(300)) == nil, "no link may be accepted")
        }
        let good = try kind.make(node: "client", pki: pki, network: network)
        let link = try await good.connect(to: server.address, expectedPeer: NodeID("server"))
        #expect(link.peer.certifiedNodeID == NodeID("server"))
        await server.stop()
    }

    @Test("refused handshakes are counted in metrics by reason", arguments: socketKinds)
    func refusalsAreCounted(kind: TransportKind) async throws {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        let security = try pki.security(for: "server")
        let address = HostPort(host: "127.0.0.1", port: 0)
        let transport: any Transport = switch kind {
        case .tcp: try TCPTransport(listenAddress: address, security: security, options: TransportKind.testOptions, metrics: factory)
        default: try GRPCTransport(listenAddress: address, security: security, options: TransportKind.testOptions, metrics: factory)
        }
        let server = try await Listener.start(transport)
        let (expired, _) = try badSecurity(.expired)
        let client = try kind.make(node: "client", pki: pki, network: network, security: expired)
        _ = try? await client.connect(to: server.address, expectedPeer: nil)
        // The server logs and counts its refusal as the connection closes; give it a moment.
        var text = ""
        for _ in 0..<50 where !text.contains("reason=\"expired\"") {
            try await Task.sleep(for: .milliseconds(20))
            text = registry.emitToString()
        }
        #expect(text.contains("agentflow_link_handshake_failures_total"), "\(text)")
        #expect(text.contains("reason=\"expired\"") && text.contains("role=\"accepted\"") && text.contains("transport=\"\(kind.rawValue)\""), "\(text)")
        await server.stop()
    }

    @Test("a server with a certificate of another CA is refused by the dialler", arguments: socketKinds)
    func serverOfOtherCA(kind: TransportKind) async throws {
        let other = try CertificateAuthority.makeCA(commonName: "Impostor CA")
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network, security: try pki.security(for: "server", issuer: other)))
        let client = try kind.make(node: "client", pki: pki, network: network)
        await #expect(throws: TransportError.self) { _ = try await client.connect(to: server.address, expectedPeer: nil) }
        await server.stop()
    }

    @Test("a TLS client with no certificate is refused (openssl s_client)", arguments: socketKinds)
    func noClientCertificate(kind: TransportKind) async throws {
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network))
        let output = try runProcess("/usr/bin/openssl", [
            "s_client", "-connect", "127.0.0.1:\(server.address.port)", "-CAfile", pki.caFile, "-tls1_3",
            "-alpn", kind == .grpc ? "h2" : "agentflow-tcp/1",
        ], input: "hello\n", timeout: 10)
        #expect(output.contains("alert certificate required") || output.contains("alert") || output.contains("errno"), "\(output.suffix(600))")
        #expect(await server.accepted.next(timeout: .milliseconds(300)) == nil)
        await server.stop()
    }

    @Test("connections beyond max_connections are closed at once; freed slots are reused", arguments: socketKinds)
    func connectionLimit(kind: TransportKind) async throws {
        var options = TransportKind.testOptions
        options.maxConnections = 3
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network, options: options))
        // Three silent connections fill the slots (the handshake timeout would close them after 5 s).
        var holders: [any Channel] = []
        for _ in 0..<3 { holders.append(try await RawConnection.open(to: server.address)) }
        try await Task.sleep(for: .milliseconds(100))
        let refusedFast = try await RawConnection.send([0x16, 0x03, 0x01], to: server.address, waitForClose: .seconds(2))
        #expect(refusedFast, "a fourth connection should be closed at once")
        for holder in holders { try await holder.close() }
        try await Task.sleep(for: .milliseconds(200))
        let client = try kind.make(node: "client", pki: pki, network: network, options: options)
        let link = try await client.connect(to: server.address, expectedPeer: NodeID("server"))
        #expect(link.peer.certifiedNodeID == NodeID("server"))
        client.beginGracefulShutdown()
        await server.stop()
    }

    @Test("garbage bytes and silent half-open connections are dropped; the listener keeps serving", arguments: socketKinds, [false, true])
    func garbageAndHalfOpen(kind: TransportKind, plaintext: Bool) async throws {
        let security: TransportSecurity? = plaintext ? .plaintext : nil
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network, security: security))
        // Garbage: an HTTP/1 request, then random bytes.
        for payload in [Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), (0..<4_096).map { _ in UInt8.random(in: 0...255) }] {
            // Random bytes can begin like a TLS record whose length is not yet reached; OpenSSL
            // then waits, and the handshake timeout (5 s here) closes it: allow for that.
            let closed = try await RawConnection.send(payload, to: server.address, waitForClose: .seconds(8))
            #expect(closed, "the server should close a connection that sends garbage")
        }
        // Half-open: connect and say nothing; the handshake timeout (5 s in tests) closes it.
        let started = ContinuousClock.now
        let closed = try await RawConnection.send([], to: server.address, waitForClose: .seconds(10))
        #expect(closed, "the server should close a silent connection")
        #expect(ContinuousClock.now - started < .seconds(9))
        #expect(await server.accepted.next(timeout: .milliseconds(100)) == nil)
        // Still serving.
        let client = try kind.make(node: "client", pki: pki, network: network, security: security)
        let link = try await client.connect(to: server.address, expectedPeer: plaintext ? nil : NodeID("server"))
        try await link.outbound.write(message(1))
        let accepted = try #require(await server.accepted.next())
        var inbound = accepted.inbound.makeAsyncIterator()
        let first = try await inbound.next()
        #expect(first?.taskLog.header.sequence == 1)
        await server.stop()
    }
}

/// A raw TCP client: writes bytes and reports whether the server closed the connection in time.
enum RawConnection {
    final class CloseWatcher: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }

    /// A connection that says nothing (the caller closes it).
    static func open(to address: HostPort) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(CloseWatcher()) }
            .connect(host: address.host, port: address.port).get()
    }

    static func send(_ bytes: [UInt8], to address: HostPort, waitForClose limit: Duration) async throws -> Bool {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(CloseWatcher()) }
            .connect(host: address.host, port: address.port).get()
        // The server may already have closed it (that is what some callers check for).
        if !bytes.isEmpty { try? await channel.writeAndFlush(ByteBuffer(bytes: bytes)) }
        let closeFuture = channel.closeFuture
        let closed = await finishes(within: limit) { try? await closeFuture.get() }
        if !closed { try? await channel.close() }
        return closed
    }
}

/// Runs a program with a time limit, returning its combined output.
///
/// Reads without blocking until the program exits: a process spawned at the
/// same moment by another test (redis-server, say) can inherit the pipe's
/// write end, so waiting for end-of-file could wait forever.
func runProcess(_ path: String, _ arguments: [String], input: String, timeout: Double) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let stdin = Pipe()
    let output = Pipe()
    process.standardInput = stdin
    process.standardOutput = output
    process.standardError = output
    try process.run()
    if !input.isEmpty { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    let descriptor = output.fileHandleForReading.fileDescriptor
    _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
    var collected: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    func drain() {
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            guard count > 0 else { return }
            collected += buffer.prefix(count)
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline {
        drain()
        usleep(20_000)
    }
    if process.isRunning {
        try? stdin.fileHandleForWriting.close()
        usleep(500_000)
        if process.isRunning { process.terminate() }
    }
    process.waitUntilExit()
    drain()
    try? stdin.fileHandleForWriting.close()
    try? output.fileHandleForReading.close()
    return String(decoding: collected, as: UTF8.self)
}
