import AgentFlowCore
import AgentFlowInMemory
import AgentFlowMesh
import AgentFlowProto
@testable import AgentFlowCluster
import Testing

/// Ordering by construction: a sequence number and its sends to every link
/// are one step of the node's state, so publishers racing each other can
/// never put event N+1 on a link before N.
@Suite("Cluster: ordering under concurrent publishers")
struct OrderingTests {
    /// Two nodes linked over the in-memory transport.
    struct Pair {
        let a: ClusterNode
        let b: ClusterNode
        let runs: [Task<Void, any Error>]

        init() {
            let network = InMemoryNetwork()
            let ids = [NodeID("a")!, NodeID("b")!]
            let address = { (id: NodeID) in HostPort(host: "host-\(id)", port: 7000) }
            // Each knows the other's address; the in-memory network carries the links.
            struct Fixed: Discovery {
                let peer: NodeID
                let endpoint: DiscoveredEndpoint
                var name: String { "fixed" }
                func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
                    let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
                    continuation.yield(PeerSetUpdate(peers: [DiscoveredPeer(nodeID: peer, displayName: peer.rawValue, endpoints: [endpoint], labels: [:])]))
                    return stream
                }
            }
            let nodes = ids.map { id -> ClusterNode in
                let other = ids.first { $0 != id }!
                let transport = InMemoryTransport(localNodeID: id, listenAddress: address(id), network: network)
                let identity = LocalIdentity(nodeID: id, displayName: id.rawValue, clusterName: "test", transport: "memory", advertised: [], labels: [:])
                // The periodic sync is far away: only a gap could make the receiver ask for one.
                return ClusterNode(localID: id, incarnation: 1, options: ClusterOptions(syncInterval: .seconds(3_600)),
                                   commands: .init(allowed: [], known: [])) { protocols, effects in
                    MeshNode(identity: identity, transport: transport,
                             discovery: Fixed(peer: other, endpoint: DiscoveredEndpoint(transport: "memory", address: address(other))),
                             options: MeshOptions(pingInterval: .seconds(1), peerTimeout: .seconds(10)),
                             protocols: protocols, effects: effects, usesTLS: false)
                }
            }
            a = nodes[0]
            b = nodes[1]
            runs = nodes.map { node in Task { try await node.mesh.run() } }
        }

        func stop() {
            for node in [a, b] { node.mesh.shutdown() }
            for run in runs { run.cancel() }
        }
    }

    @Test("8 tasks publishing at full speed: the receiver applies every event in order and never sees a gap")
    func concurrentPublishers() async throws {
        let pair = Pair()
        defer { pair.stop() }
        let deadline = ContinuousClock.now + .seconds(10)
        while pair.a.mesh.links().isEmpty || pair.b.mesh.links().isEmpty {
            guard ContinuousClock.now < deadline else { Issue.record("a and b never linked"); return }
            try await Task.sleep(for: .milliseconds(10))
        }
        let perTask = 100
        let a = pair.a
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for index in 0..<perTask {
                        var line = Agentflow_Mesh_V1_TaskLog()
                        line.task = "t\(task)"
                        line.text = "line \(index)"
                        a.publish(.taskLog(line))
                    }
                }
            }
        }
        let total = UInt64(8 * perTask)
        while pair.b.origins()["a"]?.state.lastSequence ?? 0 < total {
            guard ContinuousClock.now < deadline else { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        let counters = pair.b.counters
        #expect(pair.b.origins()["a"]?.state.lastSequence == total)
        #expect(counters.gaps == 0, "the receiver saw \(counters.gaps) gap(s): events were enqueued out of order")
        #expect(counters.applied == total)
    }
}
