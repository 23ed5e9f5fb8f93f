import AgentFlowCore
import AgentFlowDiscovery
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite("Signal server robustness", .timeLimit(.minutes(1)))
struct SignalRobustnessTests {
    /// Opens a raw TCP connection, sends `bytes`, and returns what came back and
    /// how long until the server closed the connection (nil if still open at `limit`).
    func rawExchange(_ address: HostPort, send bytes: [UInt8], limit: Duration) async throws -> (reply: [UInt8], closedAfter: Duration?) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let start = ContinuousClock.now
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: bytes))
            return try await withThrowingTaskGroup(of: ([UInt8], Duration?)?.self) { group in
                group.addTask {
                    var reply: [UInt8] = []
                    do {
                        for try await chunk in inbound { reply += Array(chunk.readableBytesView) }
                    } catch {}
                    return (reply, ContinuousClock.now - start)
                }
                group.addTask {
                    try await Task.sleep(for: limit)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first ?? ([], nil)
            }
        }
    }

    @Test("a slowloris connection that stops mid-request is closed after idle_timeout")
    func slowloris() async throws {
        let server = try await RunningSignalServer.start("http:\n  listen: 127.0.0.1:0\n  idle_timeout: 1s\n")
        let (_, closedAfter) = try await rawExchange(server.http, send: Array("POST /register HTTP/1.1\r\nHost: x\r\nContent-Le".utf8), limit: .seconds(5))
        let closed = try #require(closedAfter, "the half-sent request was never closed")
        #expect(closed >= .milliseconds(900) && closed < .seconds(3))
        #expect(try await server.call("GET", "/healthz").status == 200)
        await server.stop()
    }

    @Test("garbage and malformed HTTP get an error or a close, never a hang; the server stays up")
    func garbage() async throws {
        let server = try await RunningSignalServer.start("http:\n  listen: 127.0.0.1:0\n  idle_timeout: 2s\n")
        let inputs: [[UInt8]] = [
            (0..<4_096).map { _ in UInt8.random(in: 0...255) },
            Array("GET / HTTP/9.9\r\n\r\n".utf8),
            Array("POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".utf8),
            Array("POST /register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n".utf8),
            Array("GET /list HTTP/1.1\r\nHost: x\r\n\(String(repeating: "X-Big: \(String(repeating: "a", count: 8_000))\r\n", count: 20))\r\n".utf8),
        ]
        for input in inputs {
            let (_, closedAfter) = try await rawExchange(server.http, send: input, limit: .seconds(4))
            #expect(closedAfter != nil, "the connection hung")
        }
        // A well-formed request with a huge declared body is refused with 413 before it is read.
        let (reply, _) = try await rawExchange(
            server.http, send: Array("POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{".utf8), limit: .seconds(3))
        #expect(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 413"))
        #expect(try await server.call("GET", "/healthz").status == 200)
        await server.stop()
    }
}

@Suite("Signal server CORS")
struct SignalCORSTests {
    @Test("allowed origins get CORS headers and preflights; others do not")
    func cors() async throws {
        let server = try await RunningSignalServer.start("http:\n  listen: 127.0.0.1:0\n  cors_allowed_origins: [\"https://dash.example\"]\n")
        let allowed = try await server.call("GET", "/healthz", headers: ["Origin: https://dash.example"])
        #expect(allowed.headers.header("access-control-allow-origin") == "https://dash.example")
        let preflight = try await server.call("OPTIONS", "/register", headers: ["Origin: https://dash.example", "Access-Control-Request-Method: POST"])
        #expect(preflight.status == 204)
        #expect(preflight.headers.header("access-control-allow-methods")?.contains("POST") == true)
        let other = try await server.call("GET", "/healthz", headers: ["Origin: https://evil.example"])
        #expect(other.headers.header("access-control-allow-origin") == nil)
        await server.stop()
    }
}
