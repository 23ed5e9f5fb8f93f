import AgentFlowCore
import AgentFlowDiscovery
import Foundation
import Testing

@Suite("Static peers discovery")
struct StaticPeersDiscoveryTests {
    @Test("a peers file decodes; the local node is left out; changes, breakage and deletion are followed")
    func followsTheFile() async throws {
        let directory = NSTemporaryDirectory() + "agentflow-peers-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/peers.yml"
        func write(_ text: String) throws { try text.write(toFile: file, atomically: true, encoding: .utf8) }
        try write("""
            peers:
              - id: master-a
                endpoints: [grpc://127.0.0.1:50051]
              - id: master-b
                name: Master B
                endpoints: [grpc://127.0.0.1:50052, "tcp://[::1]:50062"]
                labels: {site: lab}
            """)
        let discovery = StaticPeersDiscovery(file: file, reloadInterval: .milliseconds(50))
        let local = LocalAnnouncement(nodeID: NodeID("master-a")!, displayName: "A", endpoints: [], labels: [:])
        var updates = discovery.peerSets(announcing: local).makeAsyncIterator()

        let first = try #require(try await updates.next())
        #expect(first.health == .healthy)
        #expect(first.peers.map(\.nodeID.rawValue) == ["master-b"])
        #expect(first.peers.first?.displayName == "Master B")
        #expect(first.peers.first?.endpoints.map(\.description) == ["grpc://127.0.0.1:50052", "tcp://[::1]:50062"])
        #expect(first.peers.first?.labels == ["site": "lab"])

        // A line added: the peer appears.
        try write("""
            peers:
              - {id: master-b, endpoints: [grpc://127.0.0.1:50052]}
              - {id: master-c, endpoints: [grpc://127.0.0.1:50053]}
            """)
        let second = try #require(try await updates.next())
        #expect(second.peers.map(\.nodeID.rawValue) == ["master-b", "master-c"])

        // A broken file keeps the last good set, degraded, with the reason.
        try write("peers:\n  - {id: master-d, endpoints: [nonsense]}\n")
        let third = try #require(try await updates.next())
        #expect(third.peers.map(\.nodeID.rawValue) == ["master-b", "master-c"])
        guard case .degraded(let reason) = third.health else { Issue.record("expected degraded"); return }
        #expect(reason.contains("peers[0].endpoints") && reason.contains("nonsense"), "\(reason)")

        // A line removed: the peer goes.
        try write("peers:\n  - {id: master-c, endpoints: [grpc://127.0.0.1:50053]}\n")
        let fourth = try #require(try await updates.next())
        #expect(fourth.health == .healthy)
        #expect(fourth.peers.map(\.nodeID.rawValue) == ["master-c"])

        // Deleted: last set, degraded.
        try FileManager.default.removeItem(atPath: file)
        let fifth = try #require(try await updates.next())
        #expect(fifth.peers.map(\.nodeID.rawValue) == ["master-c"])
        #expect(fifth.health != .healthy)
    }

    @Test("the example peers file decodes")
    func example() throws {
        let file = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appending(path: "examples/static-peers/peers.yml").path()
        let peers = try StaticPeersFile.parse(try String(contentsOfFile: file, encoding: .utf8), file: file)
        #expect(peers.map(\.nodeID.rawValue) == ["master-a", "master-b"])
        #expect(peers.last?.endpoints.count == 2)
    }

    @Test("bad peers files are refused naming the key and value",
          arguments: [
            ("peers:\n  - endpoints: [grpc://h:1]\n", "peers[0].id"),
            ("peers:\n  - {id: b, endpoints: []}\n", "peers[0].endpoints"),
            ("peers:\n  - {id: b, endpoints: [grpc://h:0]}\n", "peers[0].endpoints"),
            ("peers:\n  - {id: b, endpoints: [grpc://h:1]}\n  - {id: b, endpoints: [grpc://h:2]}\n", "listed twice"),
            ("peers:\n  - {id: b, endpoints: [grpc://h:1], colour: red}\n", "colour"),
            ("peer:\n  - {id: b}\n", "peer"),
            ("peers: [\n", "peers.yml"),
          ])
    func refusals(text: String, mention: String) {
        do {
            _ = try StaticPeersFile.parse(text, file: "/etc/agentflow/peers.yml")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.description.contains(mention), "\(error.description)")
        }
    }
}
