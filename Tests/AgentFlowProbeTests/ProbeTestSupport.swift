import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSignal
import AgentFlowTLS
import AgentFlowTesting
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// A real signal server in this process, on loopback.
struct SignalUnderTest {
    let http: HostPort
    let stun: HostPort?
    let task: Task<Void, any Error>
    let client = CurlHTTPClient()
    var base: String { "http://\(http)" }

    static func start(_ yaml: String) async throws -> SignalUnderTest {
        var text = "role: signal\n" + yaml
        if !yaml.contains("http:") { text += "\nhttp:\n  listen: 127.0.0.1:0\n" }
        if !yaml.contains("stun:") { text += "\nstun:\n  listen: 127.0.0.1:0\n" }
        let file = FileManager.default.temporaryDirectory.appending(path: "probe-signal-\(UUID().uuidString).yml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let config = try ConfigLoader.loadSignal(file: file.path(), environment: [:])
        var logger = Logger(label: "probe-test-signal")
        logger.logLevel = .warning
        let server = try SignalServer(config: config, logger: logger)
        let (addresses, continuation) = AsyncStream.makeStream(of: SignalServer.BoundAddresses.self)
        let task = Task { try await server.run(handleSignals: false) { continuation.yield($0) } }
        var iterator = addresses.makeAsyncIterator()
        guard let bound = await iterator.next() else { throw CancellationError() }
        return SignalUnderTest(http: bound.http, stun: bound.stun, task: task)
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }

    struct Reply {
        var status: Int
        var json: [String: Any]
        var response: CurlEasyHandle.Response
        var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
        var body: String { String(decoding: response.body, as: UTF8.self) }
    }

    func call(_ method: String, _ path: String, json: Any? = nil, raw: String? = nil) async throws -> Reply {
        var body: [UInt8]?
        if let json { body = Array(try JSONSerialization.data(withJSONObject: json)) }
        if let raw { body = Array(raw.utf8) }
        let response = try await client.request(method, base + path, headers: ["Content-Type: application/json"], body: body)
        return Reply(status: response.status, json: (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:], response: response)
    }

    func register(_ id: String, port: Int = 50051) async throws -> String {
        let reply = try await call("POST", "/register", json: ["node_id": id, "endpoints": [["transport": "grpc", "host": "127.0.0.1", "port": port]]])
        #expect(reply.status == 201, "\(reply.body)")
        return try #require(reply.json["secret"] as? String)
    }
}

/// A port free for both TCP and UDP on every address of `hosts` (below the
/// ephemeral range, so an outgoing socket does not take it meanwhile).
func freePort(on hosts: [String] = ["127.0.0.1"]) throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20_000...32_000)
        var free = true
        for host in hosts {
            for type in [SOCK_STREAM, SOCK_DGRAM] {
                let fd = socket(AF_INET, Int32(type.rawValue), 0)
                defer { close(fd) }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                inet_pton(AF_INET, host, &address.sin_addr)
                let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                if bound != 0 { free = false }
            }
        }
        if free { return port }
    }
    throw ProbeTestError("no free port found")
}

struct ProbeTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A TCP listener on `host` that does one thing with every connection, and counts them.
final class TestListener: Sendable {
    enum Behaviour: Sendable {
        /// Real TLS (our server side, mutual TLS): answers a ClientHello with a ServerHello.
        case tls(TLSContext)
        /// Writes these bytes, then closes.
        case answer([UInt8])
        /// Reads and never answers.
        case silent
    }

    let channel: any Channel
    let accepted: Counter
    var acceptedCount: Int { accepted.value.withLock { $0 } }
    var port: Int { channel.localAddress!.port! }

    init(host: String = "127.0.0.1", _ behaviour: Behaviour) async throws {
        let accepted = Counter()
        self.accepted = accepted
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                accepted.value.withLock { $0 += 1 }
                return child.eventLoop.makeCompletedFuture {
                    switch behaviour {
                    case .tls(let context): try child.pipeline.syncOperations.addHandler(try TLSHandler(context: context))
                    case .answer(let bytes):
                        child.writeAndFlush(ByteBuffer(bytes: bytes)).whenComplete { _ in child.close(promise: nil) }
                    case .silent: break
                    }
                }
            }
            .bind(host: host, port: 0).get()
    }

    func close() async { try? await channel.close() }
}

/// Mutual-TLS server context from a throwaway PKI.
func serverTLSContext(_ certificates: TestCertificates) throws -> TLSContext {
    guard case .mutualTLS(let files) = try certificates.security(for: NodeID("reach-target")!) else { throw ProbeTestError("no TLS files") }
    return try TLSContext(files: files, role: .server, alpn: ["h2"])
}

final class Counter: Sendable {
    let value = Mutex(0)
}
