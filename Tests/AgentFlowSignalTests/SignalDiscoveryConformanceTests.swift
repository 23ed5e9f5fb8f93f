import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowTesting
import Foundation
import Synchronization
import Testing

/// The `signal` backend passes the discovery suite against a real signal
/// server: the bed registers the suite's peers (and keeps them alive with
/// heartbeats), breaks the source by stopping the server, and repairs it by
/// starting a fresh one on the same ports.
@Suite("signal discovery conformance", .serialized)
struct SignalDiscoveryConformanceTests {
    @Test("every discovery check", arguments: DiscoveryConformance.checks)
    func conformance(check: DiscoveryConformance.Check) async throws {
        let bed = try await SignalBed()
        do {
            try await check.run(bed)
        } catch {
            await bed.stop()
            throw error
        }
        await bed.stop()
    }
}

final class SignalBed: DiscoveryTestBed, Sendable {
    // A 3 s TTL: the backend heartbeats (and so checks the revision) every second, and the
    // bed's own peers survive a slow heartbeat round on a busy machine. No pacing of /list
    // fetches (a 21-node fleet would otherwise be told to wait a second between them).
    static let yaml = "registry:\n  ttl: 3s\n  sweep_interval: 100ms\n  list_polls_per_second: 100000\n"
    // A heartbeat and a fetch.
    let refreshInterval: Duration = .milliseconds(1_200)
    let httpPort: Int
    let stunPort: Int
    private let state = Mutex<(server: RunningSignalServer?, peers: [DiscoveredPeer], secrets: [String: String])>((nil, [], [:]))
    private let dataDirectory = FileManager.default.temporaryDirectory.appending(path: "signal-bed-\(UUID().uuidString.prefix(8))").path()
    /// Keeps the registered peers alive, as their own heartbeats would.
    private let heartbeatTask = Mutex<Task<Void, Never>?>(nil)

    init() async throws {
        let server = try await RunningSignalServer.start(Self.yaml)
        httpPort = server.http.port
        stunPort = server.stun!.port
        state.withLock { $0.server = server }
        startHeartbeats()
    }

    private func startHeartbeats() {
        let task = Task { [weak self] in
            while !Task.isCancelled, let self {
                let (server, secrets) = self.state.withLock { ($0.server, $0.secrets) }
                if let server {
                    await withTaskGroup(of: Void.self) { group in
                        for (id, secret) in secrets {
                            group.addTask { _ = try? await server.call("POST", "/heartbeat", json: ["node_id": id, "secret": secret]) }
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        heartbeatTask.withLock { $0 = task }
    }

    func stop() async {
        heartbeatTask.withLock { $0 }?.cancel()
        let server = state.withLock { state -> RunningSignalServer? in defer { state.server = nil }; return state.server }
        await server?.stop()
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }

    func makeDiscovery(context: DiscoveryContext) async throws -> any Discovery {
        let yaml = "kind: signal\nurl: http://127.0.0.1:\(httpPort)\npoll_interval: 100ms\nrequest_timeout: 2s\n"
        let section = try ConfigSection.root(ConfigNode.parse(yaml: yaml, file: "bed.yml"))
        let options = try SignalDiscoveryModule.decodeOptions(from: section)
        return try SignalDiscoveryModule.makeDiscovery(
            options: options, context: DiscoveryContext(localNodeID: context.localNodeID, dataDirectory: dataDirectory, logger: context.logger))
    }

    func setPeers(_ peers: [DiscoveredPeer]) async throws {
        let (server, old, secrets) = state.withLock { ($0.server, $0.peers, $0.secrets) }
        state.withLock { $0.peers = peers }
        guard let server else { return }
        let keep = Set(peers.map(\.nodeID))
        for gone in old where !keep.contains(gone.nodeID) {
            if let secret = secrets[gone.nodeID.rawValue] {
                _ = try await server.call("POST", "/deregister", json: ["node_id": gone.nodeID.rawValue, "secret": secret])
            }
            state.withLock { _ = $0.secrets.removeValue(forKey: gone.nodeID.rawValue) }
        }
        for peer in peers where secrets[peer.nodeID.rawValue] == nil || !old.contains(peer) {
            try await register(peer, on: server)
        }
    }

    private func register(_ peer: DiscoveredPeer, on server: RunningSignalServer) async throws {
        var body: [String: Any] = [
            "node_id": peer.nodeID.rawValue, "version": "test",
            "endpoints": peer.endpoints.map { ["transport": $0.transport, "host": $0.address.host, "port": $0.address.port] },
        ]
        if let secret = state.withLock({ $0.secrets[peer.nodeID.rawValue] }) { body["secret"] = secret }
        let reply = try await server.call("POST", "/register", json: body)
        guard reply.status == 200 || reply.status == 201, let secret = reply.json["secret"] as? String else {
            throw HarnessFailure("registering \(peer.nodeID): HTTP \(reply.status) \(reply.body)")
        }
        state.withLock { $0.secrets[peer.nodeID.rawValue] = secret }
    }

    func breakSource() async throws {
        let server = state.withLock { state -> RunningSignalServer? in defer { state.server = nil }; return state.server }
        await server?.stop()
    }

    func repairSource() async throws {
        let server = try await RunningSignalServer.start(Self.yaml + "http:\n  listen: 127.0.0.1:\(httpPort)\nstun:\n  listen: 127.0.0.1:\(stunPort)\n")
        let peers = state.withLock { state -> [DiscoveredPeer] in
            state.server = server
            state.secrets = [:]  // a fresh memory store knows nobody
            return state.peers
        }
        for peer in peers { try await register(peer, on: server) }
    }
}

struct HarnessFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
