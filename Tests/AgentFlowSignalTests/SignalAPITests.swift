import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSignal
import Foundation
import Testing

@Suite("Signal server REST API", .timeLimit(.minutes(2)))
struct SignalAPITests {
    @Test("register, list, heartbeat, deregister", arguments: StoreKind.allCases)
    func lifecycle(store: StoreKind) async throws {
        try await withServer(store) { server in
            let secret = try await server.register("master-a", labels: ["site": "home"])
            #expect(secret.count == 64)
            let list = try await server.call("GET", "/list")
            #expect(list.status == 200)
            let nodes = try #require(list.json["nodes"] as? [[String: Any]])
            #expect(nodes.count == 1)
            #expect(nodes[0]["node_id"] as? String == "master-a")
            #expect(nodes[0]["observed_address"] as? String == "127.0.0.1")
            #expect(nodes[0]["secret"] == nil && nodes[0]["secret_digest"] == nil, "secrets never leave the server")
            #expect((nodes[0]["labels"] as? [String: String]) == ["site": "home"])

            let beat = try await server.call("POST", "/heartbeat", json: ["node_id": "master-a", "secret": secret])
            #expect(beat.status == 200)
            let gone = try await server.call("POST", "/deregister", json: ["node_id": "master-a", "secret": secret])
            #expect(gone.status == 200)
            #expect(try await server.listedIDs().isEmpty)
            let after = try await server.call("POST", "/heartbeat", json: ["node_id": "master-a", "secret": secret])
            #expect(after.status == 404)
            #expect(after.errorCode == "unknown_node")
            #expect(after.errorMessage.contains("re-register"))
        }
    }

    @Test("silent nodes are evicted within TTL + one sweep; heartbeats keep nodes alive", arguments: StoreKind.allCases)
    func eviction(store: StoreKind) async throws {
        try await withServer(store, "registry:\n  ttl: 1s\n  sweep_interval: 100ms\n") { server in
            let quietSecret = try await server.register("quiet")
            let busySecret = try await server.register("busy")
            let start = ContinuousClock.now
            var evictedAfter: Duration?
            while ContinuousClock.now - start < .seconds(3) {
                _ = try await server.call("POST", "/heartbeat", json: ["node_id": "busy", "secret": busySecret])
                let ids = try await server.listedIDs()
                #expect(ids.contains("busy"))
                if !ids.contains("quiet") {
                    evictedAfter = ContinuousClock.now - start
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let elapsed = try #require(evictedAfter, "the silent node was never evicted")
            #expect(elapsed >= .milliseconds(900), "evicted before its TTL")
            #expect(elapsed <= .milliseconds(1_500), "not evicted within TTL + one sweep (+ slack)")
            // A heartbeat from the evicted node is told to re-register, and re-registration works.
            let late = try await server.call("POST", "/heartbeat", json: ["node_id": "quiet", "secret": quietSecret])
            #expect(late.errorCode == "unknown_node")
            let again = try await server.call("POST", "/register", json: [
                "node_id": "quiet", "secret": quietSecret, "endpoints": [["transport": "grpc", "host": "127.0.0.2", "port": 1]],
            ])
            #expect(again.status == 201)
            #expect(try await server.listedIDs().contains("quiet"))
            let metrics = try await server.call("GET", "/metrics")
            #expect(metrics.body.contains("agentflow_signal_evictions_total 1"))
        }
    }

    @Test("re-registering from a new address replaces the endpoints (IP change)", arguments: StoreKind.allCases)
    func addressChange(store: StoreKind) async throws {
        try await withServer(store) { server in
            let secret = try await server.register("mover", host: "198.51.100.1", port: 50051)
            let moved = try await server.call("POST", "/register", json: [
                "node_id": "mover", "secret": secret, "endpoints": [["transport": "tcp", "host": "203.0.113.9", "port": 6000]],
            ])
            #expect(moved.status == 200)
            #expect(moved.json["created"] as? Bool == false)
            #expect(moved.json["secret"] == nil, "an existing secret is never sent again")
            let list = try await server.call("GET", "/list")
            let node = try #require((list.json["nodes"] as? [[String: Any]])?.first)
            let endpoints = try #require(node["endpoints"] as? [[String: Any]])
            #expect(endpoints.count == 1)
            #expect(endpoints[0]["host"] as? String == "203.0.113.9")
        }
    }

    @Test("one client can never hijack, overwrite or evict another's record", arguments: StoreKind.allCases)
    func hijack(store: StoreKind) async throws {
        try await withServer(store) { server in
            let secret = try await server.register("victim", host: "192.0.2.1")
            let endpoints = [["transport": "grpc", "host": "192.0.2.66", "port": 1]]
            let overwrite = try await server.call("POST", "/register", json: ["node_id": "victim", "endpoints": endpoints])
            #expect(overwrite.status == 403)
            #expect(overwrite.errorCode == "wrong_secret")
            let guessed = try await server.call("POST", "/register", json: ["node_id": "victim", "secret": "a-wrong-guess-of-it", "endpoints": endpoints])
            #expect(guessed.status == 403)
            // A chosen secret must not be guessable in the first place.
            let short = try await server.call("POST", "/register", json: ["node_id": "newcomer", "secret": "guess", "endpoints": endpoints])
            #expect(short.status == 400 && short.body.contains("secret"))
            let null = try await server.call("POST", "/register", json: ["node_id": "newcomer", "secret": NSNull(), "endpoints": endpoints])
            #expect(null.status == 400 && null.body.contains("null"))
            #expect(try await server.call("POST", "/heartbeat", json: ["node_id": "victim", "secret": "guess"]).status == 403)
            #expect(try await server.call("POST", "/deregister", json: ["node_id": "victim", "secret": String(secret.reversed())]).status == 403)
            let list = try await server.call("GET", "/list")
            let node = try #require((list.json["nodes"] as? [[String: Any]])?.first)
            #expect(((node["endpoints"] as? [[String: Any]])?.first?["host"] as? String) == "192.0.2.1")
        }
    }

    @Test("the cluster token guards every route but /healthz")
    func token() async throws {
        let token = "cluster-token-0123456789abcdef"
        let server = try await RunningSignalServer.start("auth:\n  token: \(token)\n")
        #expect(try await server.call("GET", "/healthz").status == 200)
        for (method, path) in [("GET", "/list"), ("POST", "/register"), ("POST", "/heartbeat"), ("POST", "/deregister"), ("GET", "/metrics"), ("GET", "/openapi.yaml"), ("GET", "/nope")] {
            let missing = try await server.call(method, path)
            #expect(missing.status == 401, "\(method) \(path) without token")
            #expect(missing.errorCode == "unauthorized")
            let wrong = try await server.call(method, path, token: token + "x")
            #expect(wrong.status == 401, "\(method) \(path) with a wrong token")
            let basic = try await server.call(method, path, headers: ["Authorization: Basic \(token)"])
            #expect(basic.status == 401)
        }
        _ = try await server.register("holder", token: token)
        #expect(try await server.listedIDs(token: token) == ["holder"])
        await server.stop()
    }

    @Test("bad bodies get 400 naming the field; oversize bodies get 413")
    func badBodies() async throws {
        let server = try await RunningSignalServer.start("http:\n  listen: 127.0.0.1:0\n  max_body_bytes: 2048\nregistry:\n  max_labels: 2\n  max_endpoints: 2\n")
        let endpoint: [String: Any] = ["transport": "grpc", "host": "h", "port": 1]
        let cases: [(Any?, String?, String)] = [
            (nil, "{not json", "not valid JSON"),
            (nil, "[1,2]", "must be a JSON object"),
            (nil, "", "empty"),
            (["endpoints": [endpoint]], nil, "node_id: required"),
            (["node_id": 7, "endpoints": [endpoint]], nil, "node_id: expected a string"),
            (["node_id": "Bad Id", "endpoints": [endpoint]], nil, "node_id: \"Bad Id\" is not a node id"),
            (["node_id": "a", "endpoints": []], nil, "endpoints: at least one"),
            (["node_id": "a", "endpoints": [endpoint, endpoint, endpoint]], nil, "endpoints: at most 2"),
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "h", "port": 70000]]], nil, "endpoints[0].port: 70000 is out of range"),
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "h", "port": "80"]]], nil, "endpoints[0].port: expected an integer"),
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "h", "port": true]]], nil, "endpoints[0].port: expected an integer"),
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "h", "port": 1, "weight": 2]]], nil, "endpoints[0].weight: unknown field"),
            (["node_id": "a", "endpoints": [endpoint], "labels": ["a": "1", "b": "2", "c": "3"]], nil, "labels: at most 2"),
            (["node_id": "a", "endpoints": [endpoint], "labels": ["a": 1]], nil, "labels.a: expected a string"),
            (["node_id": "a", "endpoints": [endpoint], "admin": true], nil, "admin: unknown field"),
            // Found by driving the OpenAPI document with schemathesis: hosts are names or IP literals, nothing else.
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "h\u{19}x", "port": 1]]], nil, "endpoints[0].host: expected a host name"),
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "höst", "port": 1]]], nil, "endpoints[0].host: expected a host name"),
            (["node_id": "a", "endpoints": [["transport": "grpc", "host": "fe80::1%eth0/64", "port": 1]]], nil, "endpoints[0].host: expected a host name"),
            (["node_id": "a", "endpoints": [endpoint], "secret": NSNull()], nil, "secret: null is not allowed"),
            (["node_id": "a", "endpoints": [endpoint], "version": String(repeating: "é", count: 65)], nil, "version: longer than 64 characters"),
        ]
        for (json, raw, expected) in cases {
            let reply = try await server.call("POST", "/register", json: json, raw: raw)
            #expect(reply.status == 400, "\(expected): \(reply.body)")
            #expect(reply.errorMessage.contains(expected), "wanted “\(expected)”, got “\(reply.errorMessage)”")
        }
        let huge = try await server.call("POST", "/register", raw: String(repeating: "x", count: 10_000))
        #expect(huge.status == 413)
        #expect(huge.errorCode == "body_too_large")
        let heartbeat = try await server.call("POST", "/heartbeat", json: ["node_id": "a"])
        #expect(heartbeat.errorMessage == "secret: required")
        let route = try await server.call("GET", "/nowhere")
        #expect(route.status == 404)
        #expect(route.errorCode == "not_found")
        let query = try await server.call("GET", "/list?since=abc")
        #expect(query.status == 400)
        #expect(query.errorMessage.contains("since"))
        for bad in ["since=9223372036854775808", "since=-1", "label==x", "transport=", "transport=Bad%20Name"] {
            let reply = try await server.call("GET", "/list?\(bad)")
            #expect(reply.status == 400 && reply.errorCode == "invalid_field", "\(bad): \(reply.body)")
        }
        // What the document allows is accepted: IPv6 literals, names with _, 64 two-byte characters.
        for (id, host) in [("v6", "2001:db8::1"), ("named", "node_1.example.com")] {
            let reply = try await server.call("POST", "/register", json: ["node_id": id, "endpoints": [["transport": "grpc", "host": host, "port": 1]], "version": String(repeating: "é", count: 64)])
            #expect(reply.status == 201, "\(host): \(reply.body)")
        }
        let unknownQuery = try await server.call("GET", "/list?sort=name")
        #expect(unknownQuery.errorMessage.contains("sort: unknown query parameter"))
        // Still healthy after all that.
        #expect(try await server.call("GET", "/healthz").status == 200)
        await server.stop()
    }

    @Test("the registry refuses nodes beyond max_nodes")
    func full() async throws {
        let server = try await RunningSignalServer.start("registry:\n  max_nodes: 2\n")
        _ = try await server.register("one")
        _ = try await server.register("two")
        let third = try await server.call("POST", "/register", json: ["node_id": "three", "endpoints": [["transport": "grpc", "host": "h", "port": 1]]])
        #expect(third.status == 429)
        #expect(third.errorCode == "registry_full")
        await server.stop()
    }
}
