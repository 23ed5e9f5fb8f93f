import AgentFlowCore
import AgentFlowMesh
import AgentFlowProto
import Testing

/// `MeshState` driven by hand, one input at a time: cases the simulator found,
/// kept as plain regressions.
@Suite("Mesh core: single-node cases")
struct MeshStateTests {
    static let a = NodeID("n-a")!
    static let b = NodeID("n-b")!
    static let c = NodeID("n-c")!

    static func at(_ seconds: Double) -> MeshNow {
        let nanos = Int64(seconds * 1e9)
        return MeshNow(instant: MeshInstant(nanoseconds: nanos), wallMicros: 1_800_000_000_000_000 + nanos / 1_000)
    }

    static func link(_ id: UInt64, to peer: NodeID, incarnation: UInt64) -> LinkInfo {
        LinkInfo(id: LinkID(id), peerID: peer, peerName: peer.rawValue, peerIncarnation: incarnation,
                 advertised: [DiscoveredEndpoint(transport: "sim", address: HostPort(host: peer.rawValue, port: 7000))],
                 labels: [:], direction: .inbound, transport: "sim", remoteAddress: peer.rawValue)
    }

    /// The link states this node announced to `link` among `actions`: (node, its linked peers).
    static func announced(on link: LinkID, in actions: [MeshAction]) -> [(NodeID, Set<String>)] {
        actions.flatMap { action -> [(NodeID, Set<String>)] in
            switch action {
            case .send(let target, let envelope), .sendInOrder(let target, let envelope):
                guard target == link, case .peerExchange(let exchange)? = envelope.body else { return [] }
                return exchange.peers.compactMap { info in
                    guard info.linksVersion > 0, let id = NodeID(info.nodeID) else { return nil }
                    return (id, Set(info.linkedPeers))
                }
            default:
                return []
            }
        }
    }

    @Test("a peer back after a crash, linking before its old link ended, is announced to the other neighbours (sim seed 625,854)")
    func restartedPeerIsAnnounced() {
        let options = MeshOptions(maxPeers: 0, pingInterval: .seconds(1), peerTimeout: .seconds(4))
        let identity = LocalIdentity(nodeID: Self.a, displayName: "n-a", clusterName: "sim", incarnation: 1,
                                     transport: "sim", advertised: [], labels: [:])
        var state = MeshState(identity: identity, options: options, book: PeerBook(file: nil, maxAge: .seconds(3_600)),
                              protocols: [], seed: 1, now: Self.at(0))
        _ = state.handle(.started(advertised: []), at: Self.at(0))
        _ = state.handle(.linkUp(Self.link(1, to: Self.b, incarnation: 1)), at: Self.at(0.1))
        _ = state.handle(.linkUp(Self.link(2, to: Self.c, incarnation: 1)), at: Self.at(0.1))
        // b goes silent; c keeps talking. After peer_timeout a drops b and tells c.
        var ping = Envelope()
        ping.ping.nonce = 1
        for second in 1...4 {
            _ = state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(Double(second)))
        }
        let cut = state.handle(.tick, at: Self.at(4.2))
        #expect(Self.announced(on: LinkID(2), in: cut).contains { $0.0 == Self.a && $0.1 == [Self.c.rawValue] },
                "a does not tell c that its link to b is gone: \(cut)")
        #expect(!state.topology.isReachable(Self.b))
        // b restarts and links again while a's old link to it has not ended yet.
        let back = state.handle(.linkUp(Self.link(3, to: Self.b, incarnation: 2)), at: Self.at(4.3))
        #expect(back.contains { if case .accept(LinkID(3)) = $0 { true } else { false } })
        #expect(Self.announced(on: LinkID(2), in: back).contains { $0.0 == Self.a && $0.1 == [Self.b.rawValue, Self.c.rawValue] },
                "c never hears that a links b again, so it thinks b is unreachable: \(back)")
        #expect(state.topology.isReachable(Self.b))
    }
}
