import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSignal
import Foundation
import Testing

@Suite("Signal server: cheap polling and shared Redis", .timeLimit(.minutes(2)))
struct SignalPollingTests {
    @Test("?since= returns only changes; the ETag answers 304 when nothing changed", arguments: StoreKind.allCases)
    func deltas(store: StoreKind) async throws {
        try await withServer(store) { server in
            let secretA = try await server.register("node-a", labels: ["zone": "eu"])
            _ = try await server.register("node-b", labels: ["zone": "us"])
            let first = try await server.call("GET", "/list")
            #expect(first.json["full"] as? Bool == true)
            let revision = try #require(first.json["revision"] as? Int)
            let etag = try #require(first.headers.header("etag"))

            // Heartbeats do not change the revision: the poll is a 304 with no body.
            _ = try await server.call("POST", "/heartbeat", json: ["node_id": "node-a", "secret": secretA])
            let unchanged = try await server.call("GET", "/list?since=\(revision)", headers: ["If-None-Match: \(etag)"])
            #expect(unchanged.status == 304)
            #expect(unchanged.headers.body.isEmpty)

            // One addition and one removal: the delta carries exactly those.
            _ = try await server.register("node-c", labels: ["zone": "eu"])
            _ = try await server.call("POST", "/deregister", json: ["node_id": "node-a", "secret": secretA])
            let delta = try await server.call("GET", "/list?since=\(revision)", headers: ["If-None-Match: \(etag)"])
            #expect(delta.status == 200)
            #expect(delta.json["full"] as? Bool == false)
            #expect(((delta.json["nodes"] as? [[String: Any]]) ?? []).compactMap { $0["node_id"] as? String } == ["node-c"])
            #expect(delta.json["removed"] as? [String] == ["node-a"])
            #expect((delta.json["revision"] as? Int ?? 0) == revision + 2)

            // Filters.
            #expect(try await server.listedIDs(query: "?label=zone=eu") == ["node-c"])
            #expect(try await server.listedIDs(query: "?label=zone") == ["node-b", "node-c"])
            #expect(try await server.listedIDs(query: "?transport=tcp").isEmpty)
            #expect(try await server.listedIDs(query: "?transport=grpc&label=zone=us") == ["node-b"])
            // A revision from the future (another server's) gets the full set; so does one from an
            // earlier registry (a restarted memory store, a flushed Redis): revisions start at the time in µs.
            let future = try await server.call("GET", "/list?since=\(revision + 1_000_000)")
            #expect(future.json["full"] as? Bool == true)
            #expect(revision > 1_000_000_000_000)
            let earlier = try await server.call("GET", "/list?since=999999")
            #expect(earlier.json["full"] as? Bool == true)
        }
    }

    @Test("a delta older than the change log falls back to the full set")
    func oldBase() async throws {
        let store = MemoryRegistryStore(changeLogLimit: 4)
        let server = try await RunningSignalServer.start("", store: store)
        for index in 0..<6 { _ = try await server.register("node-\(index)") }
        let last = try #require((try await server.call("GET", "/list").json["revision"] as? NSNumber)?.uint64Value)
        // Six changes, four kept: a base before the fifth-last change is too old.
        let reply = try await server.call("GET", "/list?since=\(last - 5)")
        #expect(reply.json["full"] as? Bool == true)
        #expect((reply.json["nodes"] as? [[String: Any]])?.count == 6)
        let recent = try await server.call("GET", "/list?since=\(last - 2)")
        #expect(recent.json["full"] as? Bool == false)
        #expect((recent.json["nodes"] as? [[String: Any]])?.count == 2)
        await server.stop()
    }

    @Test("two signal servers share one Redis: any replica answers any node")
    func sharedRedis() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let yaml = "store:\n  kind: redis\n  redis_url: \(redis.url)\nregistry:\n  ttl: 1s\n  sweep_interval: 100ms\n"
        let a = try await RunningSignalServer.start(yaml)
        let b = try await RunningSignalServer.start(yaml)
        let secret = try await a.register("roamer")
        _ = try await b.register("stayer")
        #expect(try await b.listedIDs() == ["roamer", "stayer"])
        #expect(try await a.listedIDs() == ["roamer", "stayer"])
        // Heartbeats to B keep A's registration alive; the silent one is evicted (once, by either).
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(1_800) {
            #expect(try await b.call("POST", "/heartbeat", json: ["node_id": "roamer", "secret": secret]).status == 200)
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await a.listedIDs() == ["roamer"])
        let metricsA = try await a.call("GET", "/metrics").body
        let metricsB = try await b.call("GET", "/metrics").body
        let evictions = [metricsA, metricsB].map { $0.contains("agentflow_signal_evictions_total 1") }
        #expect(evictions.filter { $0 }.count == 1, "exactly one replica evicts a node")
        // Deregistering through A is seen by B, and B's hijack check uses the same secret.
        #expect(try await b.call("POST", "/deregister", json: ["node_id": "roamer", "secret": "nope"]).status == 403)
        #expect(try await a.call("POST", "/deregister", json: ["node_id": "roamer", "secret": secret]).status == 200)
        #expect(try await b.listedIDs().isEmpty)
        await a.stop()
        await b.stop()
    }

    @Test("a Redis that goes away gives a clear 503, not a crash or a hang")
    func redisOutage() async throws {
        let redis = try await RedisServerProcess.start()
        let server = try await RunningSignalServer.start("store:\n  kind: redis\n  redis_url: \(redis.url)\n")
        _ = try await server.register("before")
        redis.stop()
        try await Task.sleep(for: .milliseconds(100))
        let during = try await server.call("GET", "/list")
        #expect(during.status == 503)
        #expect(during.errorCode == "store_unavailable")
        #expect(try await server.call("GET", "/metrics").body.contains("agentflow_signal_store_errors_total 1"))
        #expect(try await server.call("GET", "/healthz").status == 200)
        await server.stop()
    }
}
