import AgentFlowCore
import AgentFlowCluster
import AgentFlowMesh
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One reading of what the dashboard shows: the mesh's status, the merged
/// cluster state and the link graph, taken together.
struct DashboardReading: Sendable {
    var mesh: MeshStatus
    var origins: [String: ClusterStore.Origin]
    var topology: MeshTopologyView
    var commands: CommandJournal
    var localID: String
    var nowMicros: Int64
}

/// A message of `/api/ws`. Every one carries `seq`, one more than the last on
/// this connection; a client that sees a gap asks for a snapshot.
struct DashboardMessage: Encodable {
    enum Kind: String, Encodable { case snapshot, delta, heartbeat }
    var type: Kind
    var seq: UInt64
    /// Unix microseconds when the message was built (the page measures staleness and latency with it).
    var sentAtMicros: Int64
    /// Snapshot only: how often a quiet feed still sends a heartbeat.
    var keepaliveMilliseconds: Int?
    /// Snapshot only: the same model as `GET /api/cluster/status`.
    var status: ClusterStatusView?
    /// The link graph as sorted pairs of node ids; in a delta only when it changed.
    var edges: [[String]]?
    /// Delta: the local node (status and own state) when it changed.
    var local: ClusterStatusView.LocalWithState?
    /// Delta: this node's peers (links, transport, RTT) when any changed.
    var peers: [PeerStatus]?
    /// Delta: the remote origins whose state or path changed.
    var nodes: [RemoteNodeView]?
    /// Delta: origins no longer in the cluster view.
    var gone: [String]?
    /// Commands issued or run here: all kept ones in a snapshot, those whose
    /// stage changed (receipt, result) in a delta. Each is whole; the page
    /// replaces its entry by `command_id` and `role`.
    var commands: [CommandJournal.Entry]?

    enum CodingKeys: String, CodingKey {
        case type, seq, sentAtMicros = "sent_at_us", keepaliveMilliseconds = "keepalive_ms", status, edges, local, peers, nodes, gone, commands
    }
}

/// The dashboard feed of one connection, without I/O: what was last sent, and
/// from a new reading, the next message. A delta names only what changed
/// since the last message, so however late the socket lets it write, the feed
/// holds one reading's worth of state and never a queue of messages.
struct DashboardFeedState {
    struct OriginMark: Hashable {
        var incarnation: UInt64
        var lastSequence: UInt64
        var path: String
    }
    struct LocalMark: Hashable {
        var status: LocalStatus
        var lastSequence: UInt64
    }

    let keepalive: Duration
    private(set) var seq: UInt64 = 0
    private var sentOrigins: [String: OriginMark] = [:]
    private var sentLocal: LocalMark?
    private var sentPeers: [PeerStatus] = []
    private var sentEdges: [[String]] = []
    private var sentCommandVersion: UInt64 = 0

    init(keepalive: Duration) { self.keepalive = keepalive }

    mutating func snapshot(_ reading: DashboardReading) -> DashboardMessage {
        let status = ClusterStatusView(mesh: reading.mesh, origins: reading.origins, topology: reading.topology, localID: reading.localID, nowMicros: reading.nowMicros)
        sentOrigins = Dictionary(uniqueKeysWithValues: status.remote.map { ($0.nodeID, Self.mark($0)) })
        sentLocal = LocalMark(status: reading.mesh.local, lastSequence: status.localSequence)
        sentPeers = reading.mesh.peers
        sentEdges = Self.edges(reading.topology)
        sentCommandVersion = reading.commands.version
        seq += 1
        return DashboardMessage(type: .snapshot, seq: seq, sentAtMicros: reading.nowMicros, keepaliveMilliseconds: Int(keepalive.inMilliseconds),
                                status: status, edges: sentEdges, commands: reading.commands.entries)
    }

    /// The changes since the last message, or nil when nothing changed.
    mutating func delta(_ reading: DashboardReading) -> DashboardMessage? {
        var message = DashboardMessage(type: .delta, seq: seq + 1, sentAtMicros: reading.nowMicros)
        var changed = false
        let peersByID = Dictionary(reading.mesh.peers.map { ($0.nodeID, $0) }, uniquingKeysWith: { a, _ in a })
        var nodes: [RemoteNodeView] = []
        var seen = Set<String>()
        for (id, origin) in reading.origins where id != reading.localID {
            seen.insert(id)
            // The mark first: the whole view (its logs, tasks, alerts) is built only for an origin that changed.
            let path = ClusterStatusView.path(id: id, origin: origin, peer: peersByID[id], topology: reading.topology)
            let mark = OriginMark(incarnation: origin.state.incarnation, lastSequence: origin.state.lastSequence, path: path)
            if sentOrigins[id] != mark {
                sentOrigins[id] = mark
                nodes.append(ClusterStatusView.remoteView(id: id, origin: origin, peer: peersByID[id], topology: reading.topology, nowMicros: reading.nowMicros))
            }
        }
        let gone = sentOrigins.keys.filter { !seen.contains($0) }.sorted()
        for id in gone { sentOrigins.removeValue(forKey: id) }
        if !nodes.isEmpty { message.nodes = nodes.sorted { $0.nodeID < $1.nodeID }; changed = true }
        if !gone.isEmpty { message.gone = gone; changed = true }
        let localOrigin = reading.origins[reading.localID]
        let local = LocalMark(status: reading.mesh.local, lastSequence: localOrigin?.state.lastSequence ?? 0)
        if local != sentLocal {
            sentLocal = local
            message.local = .init(local: reading.mesh.local, state: localOrigin.map { NodeStateView($0.state) }, lastSequence: local.lastSequence)
            changed = true
        }
        if reading.mesh.peers != sentPeers {
            sentPeers = reading.mesh.peers
            message.peers = reading.mesh.peers
            changed = true
        }
        let edges = Self.edges(reading.topology)
        if edges != sentEdges {
            sentEdges = edges
            message.edges = edges
            changed = true
        }
        if reading.commands.version != sentCommandVersion {
            message.commands = reading.commands.changed(since: sentCommandVersion)
            sentCommandVersion = reading.commands.version
            changed = true
        }
        guard changed else { return nil }
        seq += 1
        return message
    }

    mutating func heartbeat(nowMicros: Int64) -> DashboardMessage {
        seq += 1
        return DashboardMessage(type: .heartbeat, seq: seq, sentAtMicros: nowMicros)
    }

    static func mark(_ view: RemoteNodeView) -> OriginMark {
        OriginMark(incarnation: view.incarnation, lastSequence: view.lastSequence, path: view.path)
    }

    /// Every link of the graph this node knows, once, as a sorted pair.
    static func edges(_ topology: MeshTopologyView) -> [[String]] {
        var nodes = Set(topology.reported.keys)
        nodes.insert(topology.localID)
        nodes.formUnion(topology.linkedPeers)
        var edges: [[String]] = []
        for node in nodes {
            for other in topology.neighbours(of: node) where node < other {
                edges.append([node.rawValue, other.rawValue])
            }
        }
        return edges.sorted { ($0[0], $0[1]) < ($1[0], $1[1]) }
    }
}
