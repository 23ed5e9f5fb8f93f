import AgentFlowCore
@testable import AgentFlowMesh
import Foundation
import Testing

@Suite("Mesh building blocks")
struct MeshUnitTests {
    static func ids(_ count: Int) -> [NodeID] { (1...count).map { NodeID(String(format: "m-%02d", $0))! } }

    @Test("full mesh: every node prefers every other")
    func fullMesh() {
        let members = Set(Self.ids(5))
        for id in members {
            #expect(MeshTopology.preferredPeers(of: id, among: members, maxPeers: 0) == members.subtracting([id]))
        }
    }

    @Test("max_peers = k keeps a connected graph where each node holds at most k (k+1 when odd) links", arguments: [1, 2, 3, 4])
    func partialMeshIsConnected(k: Int) {
        for count in [2, 3, 5, 8, 20] {
            let members = Set(Self.ids(count))
            var edges: [NodeID: Set<NodeID>] = [:]
            for a in members {
                for b in members where a != b && MeshTopology.keepsLink(a, b, members: members, maxPeers: k) {
                    edges[a, default: []].insert(b)
                }
            }
            // Both ends agree on every link.
            for (a, neighbours) in edges { for b in neighbours { #expect(edges[b]?.contains(a) == true) } }
            for id in members { #expect((edges[id]?.count ?? 0) <= (k % 2 == 0 ? k : k + 1), "\(id) in \(count) nodes, k=\(k)") }
            // Connected: a walk from any node reaches all.
            var seen: Set<NodeID> = [members.min()!]
            var frontier = Array(seen)
            while let next = frontier.popLast() {
                for neighbour in edges[next] ?? [] where seen.insert(neighbour).inserted { frontier.append(neighbour) }
            }
            #expect(seen == members, "\(count) nodes, k=\(k)")
        }
    }

    @Test("simultaneous dials: both ends keep the link dialled by the smaller id")
    func tieBreak() {
        #expect(MeshTopology.survivingDialler(NodeID("b")!, NodeID("a")!) == NodeID("a")!)
    }

    @Test("backoff grows exponentially to its cap, jittered within [step/2, step]")
    func backoff() {
        let backoff = ReconnectBackoff(base: .milliseconds(200), maximum: .seconds(5))
        #expect(backoff.step(afterFailures: 1) == .milliseconds(200))
        #expect(backoff.step(afterFailures: 3) == .milliseconds(800))
        #expect(backoff.step(afterFailures: 30) == .seconds(5))
        var generator = SystemRandomNumberGenerator()
        for failures in 1...12 {
            let delay = backoff.delay(afterFailures: failures, using: &generator)
            let step = backoff.step(afterFailures: failures)
            #expect(delay >= step / 2 && delay <= step)
        }
    }

    @Test("the peer book persists, merges newer news only, and ages entries out")
    func peerBook() throws {
        let file = FileManager.default.temporaryDirectory.appending(path: "book-\(UUID().uuidString)/peer-book.json").path()
        defer { try? FileManager.default.removeItem(atPath: (file as NSString).deletingLastPathComponent) }
        let now = unixMicros()
        var book = PeerBook(file: file, maxAge: .seconds(3_600))
        let endpoint = DiscoveredEndpoint(transport: "grpc", address: HostPort(host: "10.0.0.2", port: 50051))
        let added = book.record(NodeID("a")!, name: "A", endpoints: [endpoint], labels: [:], seenAtMicros: now)
        #expect(added)
        try book.save()
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        var reloaded = PeerBook(file: file, maxAge: .seconds(3_600))
        try reloaded.load()
        #expect(reloaded.entries[NodeID("a")!]?.discoveredEndpoints == [endpoint])

        // Older news of a known peer changes nothing; newer news moves it; unknown fresh peers are added; stale ones are not.
        let moved = PeerBook.Entry(nodeID: NodeID("a")!, name: "A", endpoints: ["grpc://10.0.0.9:50051"], labels: [:], lastSeenMicros: now - 10)
        let mergedOld = reloaded.merge([moved], nowMicros: now)
        #expect(mergedOld.isEmpty)
        #expect(reloaded.entries[NodeID("a")!]?.endpoints == ["grpc://10.0.0.2:50051"])
        let newer = PeerBook.Entry(nodeID: NodeID("a")!, name: "A", endpoints: ["grpc://10.0.0.9:50051"], labels: [:], lastSeenMicros: now + 10)
        _ = reloaded.merge([newer], nowMicros: now + 20)
        #expect(reloaded.entries[NodeID("a")!]?.endpoints == ["grpc://10.0.0.9:50051"])
        let stale = PeerBook.Entry(nodeID: NodeID("old")!, name: "old", endpoints: ["grpc://10.0.0.3:1"], labels: [:], lastSeenMicros: now - 7_200_000_000)
        let fresh = PeerBook.Entry(nodeID: NodeID("b")!, name: "b", endpoints: ["grpc://10.0.0.4:1"], labels: [:], lastSeenMicros: now)
        let mergedNew = reloaded.merge([stale, fresh], nowMicros: now)
        #expect(mergedNew == [NodeID("b")!])

        let expired = reloaded.expire(nowMicros: now + 3_601_000_000, keep: [NodeID("b")!])
        #expect(expired == [NodeID("a")!])
        #expect(Set(reloaded.entries.keys) == [NodeID("b")!])
    }

    @Test("a corrupt peer book is reported and treated as empty")
    func corruptBook() throws {
        let file = FileManager.default.temporaryDirectory.appending(path: "book-\(UUID().uuidString).json").path()
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data("{not json".utf8).write(to: URL(filePath: file))
        var book = PeerBook(file: file, maxAge: .seconds(60))
        #expect(throws: MeshError.self) { try book.load() }
        #expect(book.entries.isEmpty)
    }
}
