import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSignal
import Foundation
import Synchronization
import Testing

/// The `signal` discovery backend against a real signal server.
@Suite("signal discovery backend", .serialized)
struct SignalDiscoveryTests {
    /// Follows one node's discovery stream, keeping the latest update.
    final class Follower: Sendable {
        final class Latest: Sendable {
            let value = Mutex<PeerSetUpdate?>(nil)
            func withLock<T>(_ body: (inout PeerSetUpdate?) -> T) -> T { value.withLock { body(&$0) } }
        }

        let latest = Latest()
        let task: Task<Void, Never>
        let dataDirectory: String

        init(_ id: String, server: RunningSignalServer, heartbeat: String = "auto", pollInterval: String = "200ms") throws {
            dataDirectory = FileManager.default.temporaryDirectory.appending(path: "signal-discovery-\(UUID().uuidString)").path()
            let yaml = """
                kind: signal
                url: \(server.base)
                poll_interval: \(pollInterval)
                heartbeat: \(heartbeat)
                request_timeout: 1s
                """
            let section = try ConfigSection.root(ConfigNode.parse(yaml: yaml, file: "test.yml"))
            let options = try SignalDiscoveryModule.decodeOptions(from: section)
            let discovery = try SignalDiscoveryModule.makeDiscovery(options: options, context: DiscoveryContext(localNodeID: NodeID(id)!, dataDirectory: dataDirectory))
            let announcement = LocalAnnouncement(
                nodeID: NodeID(id)!, displayName: id.uppercased(),
                endpoints: [DiscoveredEndpoint(transport: "grpc", address: HostPort(host: "127.0.0.1", port: 40_000 + Int.random(in: 1...9_999)))], labels: ["zone": "test"])
            let latest = self.latest
            task = Task {
                do {
                    for try await update in discovery.peerSets(announcing: announcement) { latest.withLock { $0 = update } }
                } catch {}
            }
        }

        var peers: Set<String> { Set(latest.withLock { $0?.peers.map(\.nodeID.rawValue) ?? [] }) }

        var secret: String {
            (try? String(contentsOfFile: dataDirectory + "/signal-secret", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        }

        func stop() async {
            task.cancel()
            await task.value
        }

        deinit { try? FileManager.default.removeItem(atPath: dataDirectory) }
    }

    static func stunHeartbeats(_ server: RunningSignalServer) async throws -> Int {
        let text = try await server.call("GET", "/metrics").body
        let line = text.split(separator: "\n").first { $0.hasPrefix("agentflow_signal_stun_packets_total") && $0.contains("result=\"heartbeat\"") }
        return line.flatMap { Int(Double($0.split(separator: " ").last ?? "") ?? 0) } ?? 0
    }

    /// `GET /list` requests the server has answered, any status.
    static func listRequests(_ server: RunningSignalServer) async throws -> Int {
        let text = try await server.call("GET", "/metrics").body
        return text.split(separator: "\n")
            .filter { $0.hasPrefix("agentflow_signal_requests_total") && $0.contains(#"route="/list""#) }
            .reduce(0) { $0 + Int(Double($1.split(separator: " ").last ?? "") ?? 0) }
    }

    @Test("heartbeat answers carry the revision: a quiet registry is not polled, a change is fetched at once", arguments: ["auto", "rest"])
    func pollsOnlyWhenTheRegistryMoved(heartbeat: String) async throws {
        let server = try await RunningSignalServer.start("registry:\n  ttl: 1500ms\n  sweep_interval: 100ms\n")
        defer { Task { await server.stop() } }
        let a = try Follower("node-a", server: server, heartbeat: heartbeat, pollInterval: "1s")
        try await waitUntil { (try? await server.listedIDs()) == ["node-a"] }
        try await Task.sleep(for: .milliseconds(1_500))  // past its first poll and a heartbeat or two
        // Quiet: heartbeats (every 500 ms) say the revision did not move, so the 1 s poll schedule never fires.
        let before = try await Self.listRequests(server)
        try await Task.sleep(for: .seconds(3))
        #expect(try await Self.listRequests(server) == before, "no /list while the registry is quiet")
        // A change: the next heartbeat answer shows a new revision, and the node fetches it.
        _ = try await server.register("node-b")
        try await waitUntil(timeout: .seconds(2)) { a.peers == ["node-b"] }
        #expect(try await Self.listRequests(server) == before + 1)
        await a.stop()
    }

    @Test("a busy registry: fetches stay at the server's pace (min_poll_interval_seconds), not at every change")
    func followsTheServersPace() async throws {
        // Four nodes sharing one list poll a second: each may fetch every 4 s.
        let server = try await RunningSignalServer.start("registry:\n  ttl: 1500ms\n  sweep_interval: 100ms\n  list_polls_per_second: 1\n")
        defer { Task { await server.stop() } }
        for id in ["node-b", "node-c", "node-d"] { _ = try await server.register(id) }
        let a = try Follower("node-a", server: server, pollInterval: "200ms")
        try await waitUntil { a.peers == ["node-b", "node-c", "node-d"] }
        try await Task.sleep(for: .milliseconds(600))  // a heartbeat answer has told it the pace
        // The registry moves every 250 ms for 3 s (newcomers); heartbeats (every 500 ms) see each move.
        let before = try await Self.listRequests(server)
        for round in 0..<12 {
            _ = try await server.register("churn-\(round)")
            try await Task.sleep(for: .milliseconds(250))
        }
        let fetched = try await Self.listRequests(server) - before
        #expect(fetched <= 1, "at most one fetch in 3 s at a 4 s pace, not one per heartbeat (\(fetched))")
        await a.stop()
    }

    @Test("registers, heartbeats over STUN past the TTL, sees peers arrive, and deregisters when stopped")
    func followsTheRegistry() async throws {
        let server = try await RunningSignalServer.start("registry:\n  ttl: 2s\n  sweep_interval: 200ms\n")
        defer { Task { await server.stop() } }
        let a = try Follower("node-a", server: server)
        let b = try Follower("node-b", server: server)
        try await waitUntil { a.peers == ["node-b"] && b.peers == ["node-a"] }
        let peer = try #require(a.latest.withLock { $0?.peers.first })
        #expect(peer.displayName == "NODE-B" && peer.labels == ["zone": "test"] && peer.endpoints.first?.transport == "grpc")

        // Past the TTL, both are still listed: their STUN heartbeats keep them.
        try await Task.sleep(for: .seconds(3))
        #expect(try await server.listedIDs().sorted() == ["node-a", "node-b"])
        #expect(try await Self.stunHeartbeats(server) >= 4)

        // A stopped node deregisters at once (well before its TTL would evict it).
        await b.stop()
        try await waitUntil(timeout: .seconds(1)) { a.peers.isEmpty }
        await a.stop()
    }

    @Test("an evicted node registers again by itself")
    func reRegistersAfterEviction() async throws {
        let server = try await RunningSignalServer.start("registry:\n  ttl: 2s\n  sweep_interval: 200ms\n")
        defer { Task { await server.stop() } }
        let a = try Follower("node-a", server: server)
        try await waitUntil { (try? await server.listedIDs()) == ["node-a"] }
        // Evict it behind its back (what a TTL expiry or a server restart does).
        let reply = try await server.call("POST", "/deregister", json: ["node_id": "node-a", "secret": a.secret])
        #expect(reply.status == 200, "\(reply.body)")
        #expect(try await server.listedIDs().isEmpty)
        try await waitUntil(timeout: .seconds(4)) { (try? await server.listedIDs()) == ["node-a"] }
        await a.stop()
    }

    @Test("heartbeat: rest keeps a node alive without STUN")
    func restHeartbeats() async throws {
        let server = try await RunningSignalServer.start("registry:\n  ttl: 1500ms\n  sweep_interval: 100ms\n")
        defer { Task { await server.stop() } }
        let a = try Follower("node-a", server: server, heartbeat: "rest")
        try await waitUntil { (try? await server.listedIDs()) == ["node-a"] }
        try await Task.sleep(for: .seconds(3))
        #expect(try await server.listedIDs() == ["node-a"])
        #expect(try await Self.stunHeartbeats(server) == 0)
        await a.stop()
    }

    @Test("an unreachable server: degraded, last peers kept")
    func unreachable() async throws {
        let server = try await RunningSignalServer.start()
        let a = try Follower("node-a", server: server)
        let b = try Follower("node-b", server: server)
        try await waitUntil { a.peers == ["node-b"] }
        await server.stop()
        try await waitUntil(timeout: .seconds(5)) {
            if case .degraded = a.latest.withLock({ $0?.health }) { return true }
            return false
        }
        #expect(a.peers == ["node-b"])
        await a.stop()
        await b.stop()
    }
}

func waitUntil(timeout: Duration = .seconds(5), _ condition: @Sendable () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("condition not met within \(timeout)")
    throw CancellationError()
}
