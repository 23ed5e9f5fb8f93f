import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSignal
import Foundation
import Logging
import Testing

/// A real signal server on 127.0.0.1 with ephemeral ports, for one test.
struct RunningSignalServer {
    let http: HostPort
    let stun: HostPort?
    let server: SignalServer
    let task: Task<Void, any Error>
    let client = CurlHTTPClient()

    var base: String { "http://\(http)" }

    /// Starts a server from YAML (role: signal is implied); ports default to 0.
    static func start(_ yaml: String = "", store: (any NodeRegistryStore)? = nil) async throws -> RunningSignalServer {
        let document = "role: signal\n" + yaml
        var text = document
        if !document.contains("http:") { text += "\nhttp:\n  listen: 127.0.0.1:0\n" }
        if !document.contains("stun:") { text += "\nstun:\n  listen: 127.0.0.1:0\n" }
        let file = FileManager.default.temporaryDirectory.appending(path: "signal-\(UUID().uuidString).yml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let config = try ConfigLoader.loadSignal(file: file.path(), environment: [:])
        var logger = Logger(label: "signal-test")
        logger.logLevel = .warning
        let server = try SignalServer(config: config, logger: logger, store: store)
        let (addresses, continuation) = AsyncStream.makeStream(of: SignalServer.BoundAddresses.self)
        let task = Task {
            try await server.run(handleSignals: false) { bound in continuation.yield(bound) }
        }
        var iterator = addresses.makeAsyncIterator()
        guard let bound = await iterator.next() else { throw CancellationError() }
        return RunningSignalServer(http: bound.http, stun: bound.stun, server: server, task: task)
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }

    struct Reply {
        var status: Int
        var json: [String: Any]
        var headers: CurlEasyHandle.Response
        var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
        var errorMessage: String { ((json["error"] as? [String: Any])?["message"] as? String) ?? "" }
        var body: String { String(decoding: headers.body, as: UTF8.self) }
    }

    /// Sends a request; `body` may be a JSON-encodable dictionary or raw text.
    func call(_ method: String, _ path: String, token: String? = nil, json: Any? = nil, raw: String? = nil, headers: [String] = []) async throws -> Reply {
        var allHeaders = headers
        if let token { allHeaders.append("Authorization: Bearer \(token)") }
        var body: [UInt8]?
        if let json {
            body = Array(try JSONSerialization.data(withJSONObject: json))
            allHeaders.append("Content-Type: application/json")
        } else if let raw {
            body = Array(raw.utf8)
        }
        let response = try await client.request(method, base + path, headers: allHeaders, body: body)
        let parsed = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
        return Reply(status: response.status, json: parsed, headers: response)
    }

    /// Registers a node and returns its secret.
    func register(_ id: String, token: String? = nil, host: String = "127.0.0.1", port: Int = 50051, labels: [String: String] = [:]) async throws -> String {
        let reply = try await call("POST", "/register", token: token, json: [
            "node_id": id, "endpoints": [["transport": "grpc", "host": host, "port": port]], "labels": labels, "version": "test",
        ])
        #expect(reply.status == 201, "\(reply.body)")
        return try #require(reply.json["secret"] as? String)
    }

    func listedIDs(token: String? = nil, query: String = "") async throws -> [String] {
        let reply = try await call("GET", "/list" + query, token: token)
        return ((reply.json["nodes"] as? [[String: Any]]) ?? []).compactMap { $0["node_id"] as? String }
    }
}

/// A private redis-server for one test, on a free port; `stop()` kills it.
final class RedisServerProcess: Sendable {
    let port: Int
    let pid: Int32

    /// Starts redis-server and waits (bounded) until it answers PING.
    static func start() async throws -> RedisServerProcess {
        let candidates = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestSetupError("redis-server is not installed: run ./scripts/test (it installs redis-server) or apt-get install redis-server")
        }
        let port = Int.random(in: 20_000...40_000)
        let process = Process()
        process.executableURL = URL(filePath: binary)
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let server = RedisServerProcess(port: port, pid: process.processIdentifier)
        for _ in 0..<100 {
            if (try? RedisProbe.ping(port: port)) == true { return server }
            try await Task.sleep(for: .milliseconds(50))
        }
        server.stop()
        throw TestSetupError("redis-server did not start on port \(port)")
    }

    private init(port: Int, pid: Int32) {
        self.port = port
        self.pid = pid
    }

    var url: String { "redis://127.0.0.1:\(port)/0" }

    /// Kills the server (the same as a crash, as far as clients can tell).
    func stop() {
        kill(pid, SIGKILL)
    }
}

enum RedisProbe {
    /// True when something answers PING with PONG on the port.
    static func ping(port: Int) throws -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return false }
        let ping = Array("PING\r\n".utf8)
        _ = ping.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 && String(decoding: buffer.prefix(count), as: UTF8.self).hasPrefix("+PONG")
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Which store a test runs against.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory, redis
    var testDescription: String { rawValue }
}

/// Runs `body` against a server on the given store kind (for redis, with its
/// own redis-server), then stops both.
func withServer(_ kind: StoreKind, _ yaml: String = "", _ body: (RunningSignalServer) async throws -> Void) async throws {
    var redis: RedisServerProcess?
    var text = yaml
    if kind == .redis {
        let process = try await RedisServerProcess.start()
        redis = process
        text += "\nstore:\n  kind: redis\n  redis_url: \(process.url)\n"
    }
    defer { redis?.stop() }
    let server = try await RunningSignalServer.start(text)
    do {
        try await body(server)
    } catch {
        await server.stop()
        throw error
    }
    await server.stop()
}
