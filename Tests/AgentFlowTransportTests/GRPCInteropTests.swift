import AgentFlowCore
import AgentFlowGRPC
import AgentFlowInMemory
import AgentFlowProto
import AgentFlowTLS
import Foundation
import Testing

/// Our gRPC transport against a standard gRPC implementation: Python grpcio
/// (from PyPI, set up by `scripts/interop-env`), over mTLS and h2c.
@Suite("gRPC interop with Python grpcio", .serialized)
struct GRPCInteropTests {
    let pki: TestPKI
    let network = InMemoryNetwork()

    init() throws { pki = try TestPKI() }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static var python: String {
        ProcessInfo.processInfo.environment["AGENTFLOW_INTEROP_PYTHON"] ?? root + "/.build/interop-venv/bin/python"
    }
    static var peerScript: String { root + "/Tests/Interop/grpc_peer.py" }

    func peerArguments(_ mode: String, node: String, plaintext: Bool = false, security: TransportSecurity? = nil) throws -> [String] {
        #expect(FileManager.default.isExecutableFile(atPath: Self.python), "no grpcio environment at \(Self.python): run scripts/interop-env")
        var arguments = [Self.peerScript, mode, "--protos", Self.root + "/Protos"]
        if plaintext {
            arguments.append("--plaintext")
        } else {
            guard case .mutualTLS(let files) = try security ?? pki.security(for: node) else { fatalError() }
            arguments += ["--ca", files.caCertificateFile, "--cert", files.certificateFile, "--key", files.privateKeyFile]
        }
        return arguments
    }

    /// Starts our gRPC listener whose links echo every envelope.
    func echoServer(plaintext: Bool) async throws -> Listener {
        let server = try await Listener.start(TransportKind.grpc.make(node: "server", pki: pki, network: network, security: plaintext ? .plaintext : nil))
        Task {
            while let link = await server.accepted.next(timeout: .seconds(30)) {
                Task {
                    do {
                        for try await envelope in link.inbound { try await link.outbound.write(envelope) }
                        await link.outbound.finish()
                    } catch {}
                }
            }
        }
        return server
    }

    @Test("a grpcio client streams through our listener over mTLS", arguments: [false, true])
    func grpcioClient(plaintext: Bool) async throws {
        let server = try await echoServer(plaintext: plaintext)
        let arguments = try peerArguments("client", node: "py-client", plaintext: plaintext)
            + ["--target", "127.0.0.1:\(server.address.port)", "--count", "2000"]
        let output = try runProcess(Self.python, arguments, input: "", timeout: 60)
        #expect(output.contains("\"ok\": true"), "\(output.suffix(1_500))")
        await server.stop()
    }

    @Test("an unknown method gets UNIMPLEMENTED")
    func unknownMethod() async throws {
        let server = try await echoServer(plaintext: false)
        let output = try runProcess(Self.python, try peerArguments("unknown", node: "py-client") + ["--target", "127.0.0.1:\(server.address.port)"], input: "", timeout: 60)
        #expect(output.contains("UNIMPLEMENTED") && output.contains("\"ok\": true"), "\(output.suffix(1_500))")
        await server.stop()
    }

    @Test("a grpcio client with a certificate of another CA is refused")
    func grpcioClientOfOtherCA() async throws {
        let server = try await echoServer(plaintext: false)
        let other = try CertificateAuthority.makeCA(commonName: "Other CA")
        let security = try pki.security(for: "py-client", issuer: other)
        let arguments = try peerArguments("client", node: "py-client", security: security)
            + ["--target", "127.0.0.1:\(server.address.port)", "--count", "10"]
        let output = try runProcess(Self.python, arguments, input: "", timeout: 60)
        #expect(output.contains("\"ok\": false") && output.contains("UNAVAILABLE"), "\(output.suffix(1_500))")
        await server.stop()
    }

    @Test("our client streams to a grpcio server over mTLS", arguments: [false, true])
    func ourClientToGrpcioServer(plaintext: Bool) async throws {
        let peer = try PeerProcess(python: Self.python, arguments: try peerArguments("server", node: "py-server", plaintext: plaintext) + ["--seconds", "60"])
        defer { peer.stop() }
        let port = try #require(peer.waitForPort(timeout: 30), "the grpcio server did not start: \(peer.output)")
        let client = try TransportKind.grpc.make(node: "client", pki: pki, network: network, security: plaintext ? .plaintext : nil)
        let link = try await client.connect(to: HostPort(host: "127.0.0.1", port: port), expectedPeer: plaintext ? nil : NodeID("py-server"))
        try await withTimeout(.seconds(30)) {
            let writer = Task {
                for n in 1...2_000 { try await link.outbound.write(message(UInt64(n), padding: n % 700)) }
                await link.outbound.finish()
            }
            var expected: UInt64 = 1
            for try await envelope in link.inbound {
                #expect(envelope.taskLog.header.sequence == expected)
                expected += 1
            }
            #expect(expected == 2_001, "the echo stream should end cleanly after every message")
            try await writer.value
        }
    }
}

/// A long-running helper process whose stdout announces `PORT n`.
final class PeerProcess: @unchecked Sendable {
    let process = Process()
    let stdout = Pipe()
    let stdin = Pipe()
    private(set) var output = ""

    init(python: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        process.standardOutput = stdout
        process.standardError = stdout
        process.standardInput = stdin
        try process.run()
    }

    func waitForPort(timeout: Double) -> Int? {
        let deadline = Date().addingTimeInterval(timeout)
        let handle = stdout.fileHandleForReading
        let descriptor = handle.fileDescriptor
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline && process.isRunning {
            let count = read(descriptor, &buffer, buffer.count)
            if count > 0 {
                output += String(decoding: buffer.prefix(count), as: UTF8.self)
                if let line = output.split(separator: "\n").first(where: { $0.hasPrefix("PORT ") }) {
                    return Int(line.dropFirst(5))
                }
            } else {
                usleep(50_000)
            }
        }
        return nil
    }

    func stop() {
        try? stdin.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning { process.terminate() }
    }
}
