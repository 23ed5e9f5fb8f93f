import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowTLS
import AgentFlowTesting
import Foundation
import Testing

/// `POST /reach` against a real signal server on loopback, dialling real listeners.
@Suite("reach dial-back", .serialized)
struct ReachTests {
    static let config = """
        reach:
          min_interval: 1s
          timeout: 500ms
        """

    func outcome(_ reply: SignalUnderTest.Reply, port: Int) -> String? {
        (reply.json["results"] as? [[String: Any]])?.first { $0["port"] as? Int == port }?["outcome"] as? String
    }

    @Test("a TLS server is reachable, a closed port refused, a silent one timed out, an HTTP server not TLS")
    func outcomes() async throws {
        let signal = try await SignalUnderTest.start(Self.config)
        defer { Task { await signal.stop() } }
        let certificates = try TestCertificates()
        let tls = try await TestListener(.tls(try serverTLSContext(certificates)))
        let silent = try await TestListener(.silent)
        let http = try await TestListener(.answer(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)))
        let closed = try freePort()
        defer { Task { await tls.close(); await silent.close(); await http.close() } }
        let secret = try await signal.register("n1")
        let reply = try await signal.call("POST", "/reach", json: [
            "node_id": "n1", "secret": secret,
            "endpoints": [["transport": "grpc", "port": tls.port], ["port": closed], ["port": silent.port], ["port": http.port]],
        ])
        #expect(reply.status == 200, "\(reply.body)")
        #expect(reply.json["source_address"] as? String == "127.0.0.1")
        #expect(outcome(reply, port: tls.port) == "reachable", "\(reply.body)")
        #expect(outcome(reply, port: closed) == "refused", "\(reply.body)")
        #expect(outcome(reply, port: silent.port) == "timed_out", "\(reply.body)")
        #expect(outcome(reply, port: http.port) == "not_tls", "\(reply.body)")
        #expect(reply.body.contains("HTTP/1.1 400"))
    }

    @Test("it never dials a third party: another address is not_allowed and untouched; only that is a 403")
    func thirdParty() async throws {
        let signal = try await SignalUnderTest.start(Self.config)
        defer { Task { await signal.stop() } }
        let victim = try await TestListener(host: "127.0.0.2", .silent)
        let own = try await TestListener(.answer([0x16, 0x03, 0x03, 0x00, 0x00]))
        defer { Task { await victim.close(); await own.close() } }
        let secret = try await signal.register("n2")
        let refused = try await signal.call("POST", "/reach", json: [
            "node_id": "n2", "secret": secret, "endpoints": [["host": "127.0.0.2", "port": victim.port]],
        ])
        #expect(refused.status == 403)
        #expect(refused.errorCode == "not_own_address")
        try await Task.sleep(for: .seconds(1.1))
        let mixed = try await signal.call("POST", "/reach", json: [
            "node_id": "n2", "secret": secret,
            "endpoints": [["host": "127.0.0.2", "port": victim.port], ["host": "localhost", "port": own.port]],
        ])
        #expect(mixed.status == 200, "\(mixed.body)")
        #expect(outcome(mixed, port: victim.port) == "not_allowed")
        #expect(outcome(mixed, port: own.port) == "reachable", "a name that resolves to the source is the requester's own: \(mixed.body)")
        #expect(victim.acceptedCount == 0, "the third party was dialled")
    }

    @Test("a burst is rate-limited per node with Retry-After; bad secrets, unknown nodes and bad bodies are refused")
    func abuse() async throws {
        let signal = try await SignalUnderTest.start("reach:\n  min_interval: 30s\n  timeout: 300ms\n")
        defer { Task { await signal.stop() } }
        let own = try await TestListener(.silent)
        defer { Task { await own.close() } }
        let secret = try await signal.register("n3")
        let body: [String: Any] = ["node_id": "n3", "secret": secret, "endpoints": [["port": own.port]]]
        #expect(try await signal.call("POST", "/reach", json: body).status == 200)
        for _ in 0..<5 {
            let again = try await signal.call("POST", "/reach", json: body)
            #expect(again.status == 429)
            #expect(again.errorCode == "rate_limited")
            #expect(Int(again.response.header("retry-after") ?? "") ?? 0 > 20)
        }
        #expect(own.acceptedCount == 1, "only the first request dialled")
        #expect(try await signal.call("POST", "/reach", json: ["node_id": "n3", "secret": String(repeating: "x", count: 20), "endpoints": [["port": 1]]]).status == 403)
        #expect(try await signal.call("POST", "/reach", json: ["node_id": "nobody", "secret": String(repeating: "x", count: 20), "endpoints": [["port": 1]]]).status == 404)
        for bad in ["{", "[]", #"{"node_id":"n3","secret":"s","endpoints":[]}"#, #"{"node_id":"n3","secret":"s","endpoints":[{"port":0}]}"#,
                    #"{"node_id":"n3","secret":"s","endpoints":[{"port":1,"extra":1}]}"#, #"{"node_id":"n3","secret":"s","endpoints":[{"host":"a b","port":1}]}"#] {
            let reply = try await signal.call("POST", "/reach", raw: bad)
            #expect(reply.status == 400, "\(bad) → \(reply.status) \(reply.body)")
        }
    }

    @Test("reach.enabled: false answers 404")
    func disabled() async throws {
        let signal = try await SignalUnderTest.start("reach:\n  enabled: false\n")
        defer { Task { await signal.stop() } }
        let secret = try await signal.register("n4")
        let reply = try await signal.call("POST", "/reach", json: ["node_id": "n4", "secret": secret, "endpoints": [["port": 1]]])
        #expect(reply.status == 404)
        #expect(reply.errorCode == "reach_disabled")
    }
}
