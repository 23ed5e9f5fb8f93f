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

    /// Ticks at every deadline up to `time`, as a runner's timer does; returns what they did.
    static func advance(_ state: inout MeshState, to time: Double) -> [MeshAction] {
        var actions: [MeshAction] = []
        while let due = state.nextDeadline, due <= at(time).instant {
            actions += state.handle(.tick, at: MeshNow(instant: due, wallMicros: 1_800_000_000_000_000 + due.nanoseconds / 1_000))
        }
        return actions
    }

    static func node(_ id: NodeID = a, peerTimeout: Duration = .seconds(4)) -> MeshState {
        let options = MeshOptions(maxPeers: 0, pingInterval: .seconds(1), peerTimeout: peerTimeout)
        let identity = LocalIdentity(nodeID: id, displayName: id.rawValue, clusterName: "sim", incarnation: 1,
                                     transport: "sim", advertised: [], labels: [:])
        var state = MeshState(identity: identity, options: options, book: PeerBook(file: nil, maxAge: .seconds(3_600)),
                              protocols: [], seed: 1, now: Self.at(0))
        _ = state.handle(.started(advertised: []), at: Self.at(0))
        return state
    }

    static func cuts(_ actions: [MeshAction], _ link: UInt64) -> Bool {
        actions.contains { if case .abort(LinkID(link), _) = $0 { true } else { false } }
    }

    /// a–b, a–c and (as a hears it) b–c: c can vouch for b.
    static func triangle() -> MeshState {
        var state = node()
        _ = state.handle(.linkUp(Self.link(1, to: Self.b, incarnation: 1)), at: Self.at(0.1))
        _ = state.handle(.linkUp(Self.link(2, to: Self.c, incarnation: 1)), at: Self.at(0.1))
        for (node, peers) in [(Self.b, [Self.a, Self.c]), (Self.c, [Self.a, Self.b])] {
            var exchange = Envelope()
            var info = Agentflow_Mesh_V1_PeerInfo()
            info.nodeID = node.rawValue
            info.linkedPeers = peers.map(\.rawValue)
            info.linksIncarnation = 1
            info.linksVersion = 1
            exchange.peerExchange.peers = [info]
            _ = state.handle(.envelope(exchange, from: node == Self.b ? LinkID(1) : LinkID(2)), at: Self.at(0.2))
        }
        return state
    }

    @Test("a silent peer is suspected at half of peer_timeout, probed through a neighbour linked to it, and cut at peer_timeout")
    func silentPeerIsProbedThenCut() {
        var state = Self.triangle()
        var ping = Envelope()
        ping.ping.nonce = 1
        var probed = false
        var cutAt: Double?
        // c keeps talking; b is silent from 0.2 s on.
        for tenth in 3...60 {
            let time = Double(tenth) / 10
            var actions = Self.advance(&state, to: time)
            actions += state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(time))
            probed = probed || actions.contains { action in
                if case .send(LinkID(2), let envelope) = action, case .probeRequest(let request)? = envelope.body { return request.target == Self.b.rawValue }
                return false
            }
            // c answers every probe: it has not heard from b either.
            if probed, cutAt == nil {
                var reply = Envelope()
                reply.probeReply.target = Self.b.rawValue
                reply.probeReply.linked = true
                reply.probeReply.silenceMillis = UInt64((time - 0.2) * 1_000)
                _ = state.handle(.envelope(reply, from: LinkID(2)), at: Self.at(time))
            }
            if cutAt == nil, Self.cuts(actions, 1) { cutAt = time }
        }
        #expect(probed, "a never asked c about b")
        let cut = try! #require(cutAt, "a never cut its silent link to b")
        #expect(cut >= 4.2 && cut <= 4.4, "cut after \(cut - 0.2) s of silence; peer_timeout is 4 s")
        #expect(state.silenceCuts == 1)
    }

    @Test("a silent link to a peer that a neighbour still hears is not cut at peer_timeout (only at three times it)")
    func vouchedPeerKeepsItsLink() {
        var state = Self.triangle()
        var ping = Envelope()
        ping.ping.nonce = 1
        var cutAt: Double?
        for tenth in 3...150 {
            let time = Double(tenth) / 10
            var actions = Self.advance(&state, to: time)
            actions += state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(time))
            // c heard b 100 ms ago: b is alive, only the a–b link is silent.
            var reply = Envelope()
            reply.probeReply.target = Self.b.rawValue
            reply.probeReply.linked = true
            reply.probeReply.silenceMillis = 100
            actions += state.handle(.envelope(reply, from: LinkID(2)), at: Self.at(time))
            if cutAt == nil, Self.cuts(actions, 1) { cutAt = time }
        }
        let cut = try! #require(cutAt, "the link was never cut")
        #expect(cut >= 12.2 && cut <= 12.4, "a silent link that a neighbour vouches for was cut after \(cut - 0.2) s")
    }

    @Test("a node whose own timer ran 6 s late (it was starved) does not accuse its peers (Lifeguard)")
    func starvedNodeDoesNotAccuse() {
        var state = Self.triangle()
        var ping = Envelope()
        ping.ping.nonce = 1
        for tenth in 3...10 {
            _ = Self.advance(&state, to: Double(tenth) / 10)
            _ = state.handle(.envelope(ping, from: LinkID(1)), at: Self.at(Double(tenth) / 10))
            _ = state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(Double(tenth) / 10))
        }
        // The process stops for 6 s: the next tick comes that late, before the peers' queued pings are read.
        let late = state.handle(.tick, at: Self.at(7))
        #expect(!Self.cuts(late, 1) && !Self.cuts(late, 2), "a starved node cut healthy links: \(late)")
        #expect(state.localHealth == 1)
        var after = state.handle(.envelope(ping, from: LinkID(1)), at: Self.at(7.01))
        after += state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(7.01))
        after += Self.advance(&state, to: 8)
        #expect(!Self.cuts(after, 1) && !Self.cuts(after, 2))
        // Health comes back one step per quiet peer_timeout.
        for tenth in 81...130 {
            _ = Self.advance(&state, to: Double(tenth) / 10)
            _ = state.handle(.envelope(ping, from: LinkID(1)), at: Self.at(Double(tenth) / 10))
            _ = state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(Double(tenth) / 10))
        }
        #expect(state.localHealth == 0)
    }

    @Test("the broadcast tree: every node computes the same shortest-path tree per origin, parents by smallest id")
    func broadcastTree() {
        // A ring of six (0–1–2–3–4–5–0), seen from node 2.
        let ids = (0..<6).map { NodeID("n\($0)")! }
        let edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0)]
        var state = Self.node(ids[2])
        var linkNumber: UInt64 = 0
        for (x, y) in edges where x == 2 || y == 2 {
            linkNumber += 1
            _ = state.handle(.linkUp(Self.link(linkNumber, to: ids[x == 2 ? y : x], incarnation: 1)), at: Self.at(0.1))
        }
        var exchange = Envelope()
        exchange.peerExchange.peers = ids.indices.filter { $0 != 2 }.map { index in
            var info = Agentflow_Mesh_V1_PeerInfo()
            info.nodeID = ids[index].rawValue
            info.linkedPeers = edges.compactMap { $0.0 == index ? ids[$0.1].rawValue : $0.1 == index ? ids[$0.0].rawValue : nil }
            info.linksIncarnation = 1
            info.linksVersion = 1
            return info
        }
        _ = state.handle(.envelope(exchange, from: LinkID(1)), at: Self.at(0.2))
        let topology = state.topology
        // From n0: n1 and n5, then n2 and n4, then n3, which both reach: n2 is the smaller, so n3 hangs under n2.
        let fromZero = topology.broadcastTree(from: ids[0])
        #expect(fromZero?.parent == ids[1] && fromZero?.children == [ids[3]], "\(String(describing: fromZero))")
        let fromThree = topology.broadcastTree(from: ids[3])
        #expect(fromThree?.parent == ids[3] && fromThree?.children == [ids[1]], "\(String(describing: fromThree))")
        // From n5: n0 and n4, then n1 and n3, then n2, which both reach: under n1.
        let fromFive = topology.broadcastTree(from: ids[5])
        #expect(fromFive?.parent == ids[1] && fromFive?.children == [], "\(String(describing: fromFive))")
        // Its own tree is not a relay tree.
        #expect(topology.broadcastTree(from: ids[2]) == nil)
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
        var cut: [MeshAction] = []
        for tenth in 2...42 {
            cut += Self.advance(&state, to: Double(tenth) / 10)
            _ = state.handle(.envelope(ping, from: LinkID(2)), at: Self.at(Double(tenth) / 10))
        }
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
