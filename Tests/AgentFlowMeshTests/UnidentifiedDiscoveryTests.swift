import AgentFlowCore
import AgentFlowInMemory
@testable import AgentFlowMesh
import Testing

/// Discovery that knows addresses but not node ids (DNS): the mesh dials each
/// address, learns who answered from the Hello, and links up; the address
/// that turns out to be the node itself is dialled once and never again.
@Suite("Mesh: addresses without node ids")
struct UnidentifiedDiscoveryTests {
    /// Every node's address, as a DNS name that resolves to all replicas would give it.
    struct AddressList: Discovery {
        let addresses: [DiscoveredEndpoint]
        var name: String { "addresses" }

        func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
            let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
            continuation.yield(PeerSetUpdate(peers: [], unidentified: addresses))
            return stream
        }
    }

    @Test("three nodes found only by address form a full mesh, and each dials itself at most once")
    func fullMeshFromAddresses() async throws {
        let network = InMemoryNetwork()
        let ids = ["a", "b", "c"]
        let addresses = ids.map { DiscoveredEndpoint(transport: "memory", address: HostPort(host: "replica-\($0)", port: 7000)) }
        let options = MeshOptions(pingInterval: .milliseconds(200), peerTimeout: .seconds(2), tick: .milliseconds(20))
        let nodes = ids.map { id in
            let nodeID = NodeID("node-\(id)")!
            let transport = InMemoryTransport(localNodeID: nodeID, listenAddress: HostPort(host: "replica-\(id)", port: 7000), network: network)
            // Each node advertises an alias, not its replica address: it cannot tell its own address
            // apart in the list, as a container behind a service name cannot, and must learn it by dialling.
            return MeshNode(identity: LocalIdentity(nodeID: nodeID, displayName: id, clusterName: "test", transport: "memory", advertised: [], labels: [:]),
                            transport: transport, discovery: AddressList(addresses: addresses), options: options, usesTLS: false,
                            advertise: { _ in [HostPort(host: "alias-\(id)", port: 7000)] })
        }
        let runs = nodes.map { node in Task { try await node.run() } }
        defer { for node in nodes { node.shutdown() }; for run in runs { run.cancel() } }

        let deadline = ContinuousClock.now + .seconds(10)
        var linked: [[String]] = []
        while ContinuousClock.now < deadline {
            linked = []
            for node in nodes { linked.append(await node.links().map(\.peerID.rawValue).sorted()) }
            if linked == [["node-b", "node-c"], ["node-a", "node-c"], ["node-a", "node-b"]] { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(linked == [["node-b", "node-c"], ["node-a", "node-c"], ["node-a", "node-b"]])
        // The address each node learned for its peers is the replica address discovery gave.
        let status = await nodes[0].status()
        #expect(status.peers.first { $0.nodeID == "node-b" }?.endpoints.contains("memory://replica-b:7000") == true, "\(status.peers)")
        #expect(status.peers.first { $0.nodeID == "node-b" }?.sources.contains("discovery") == true)
        // Its own address was dialled once (a self-connection), then left alone.
        try await Task.sleep(for: .milliseconds(500))
        let failures = await nodes[0].counters().dialFailures
        try await Task.sleep(for: .milliseconds(500))
        #expect(await nodes[0].counters().dialFailures == failures, "a node kept dialling its own address")
        #expect(failures <= 1)
    }
}
