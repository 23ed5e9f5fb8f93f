import AgentFlowCore
import AgentFlowCluster
import AgentFlowMesh
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `GET /api/cluster/status`: the mesh's view (`local`, `peers`, `link_count`)
/// plus the merged cluster state: the local node's own state and one entry
/// per remote origin with its freshness and path.
struct ClusterStatusView: Encodable {
    var mesh: MeshStatus
    var localState: NodeStateView?
    var localSequence: UInt64
    var remote: [RemoteNodeView]

    enum CodingKeys: String, CodingKey { case local, peers, linkCount = "link_count", remote }
    enum LocalKeys: String, CodingKey { case state, lastSequence = "last_sequence" }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(LocalWithState(local: mesh.local, state: localState, lastSequence: localSequence), forKey: .local)
        try container.encode(mesh.peers, forKey: .peers)
        try container.encode(mesh.linkCount, forKey: .linkCount)
        try container.encode(remote, forKey: .remote)
    }

    /// `LocalStatus`'s fields with `state` beside them.
    struct LocalWithState: Encodable {
        var local: LocalStatus
        var state: NodeStateView?
        var lastSequence: UInt64
        func encode(to encoder: any Encoder) throws {
            try local.encode(to: encoder)
            var container = encoder.container(keyedBy: LocalKeys.self)
            try container.encodeIfPresent(state, forKey: .state)
            try container.encode(lastSequence, forKey: .lastSequence)
        }
    }

    init(mesh: MeshStatus, origins: [String: ClusterStore.Origin], topology: MeshTopologyView, localID: String, nowMicros: Int64) {
        self.mesh = mesh
        localState = origins[localID].map { NodeStateView($0.state) }
        localSequence = origins[localID]?.state.lastSequence ?? 0
        let peers = Dictionary(mesh.peers.map { ($0.nodeID, $0) }, uniquingKeysWith: { a, _ in a })
        remote = origins.filter { $0.key != localID }.sorted { $0.key < $1.key }.map { id, origin in
            Self.remoteView(id: id, origin: origin, peer: peers[id], topology: topology, nowMicros: nowMicros)
        }
    }

    /// One remote origin as `/api/cluster/status` and the dashboard feed show it.
    static func remoteView(id: String, origin: ClusterStore.Origin, peer: PeerStatus?, topology: MeshTopologyView, nowMicros: Int64) -> RemoteNodeView {
        let direct = peer?.state == .connected
        return RemoteNodeView(
            nodeID: id, incarnation: origin.state.incarnation, lastSequence: origin.state.lastSequence,
            lastEventAt: origin.state.lastEventUnixMicros > 0 ? Self.time(origin.state.lastEventUnixMicros) : nil,
            freshnessMilliseconds: origin.lastAppliedAtMicros > 0 ? max(0, (nowMicros - origin.lastAppliedAtMicros) / 1_000) : nil,
            path: path(id: id, origin: origin, peer: peer, topology: topology), linked: direct, state: NodeStateView(origin.state))
    }

    /// How this node reaches `id`: `direct`, `via <relay>`, `snapshot`, or `unreachable`.
    static func path(id: String, origin: ClusterStore.Origin, peer: PeerStatus?, topology: MeshTopologyView) -> String {
        if peer?.state == .connected { return "direct" }
        // No path in the link graph: say so, whatever the last event came through.
        guard NodeID(id).map(topology.isReachable) ?? false else { return "unreachable" }
        return origin.via.map { $0 == id ? "direct (link now down)" : "via \($0)" } ?? "snapshot"
    }

    static func time(_ micros: Int64) -> String { Timestamp.string(unixMicros: micros) }
}

struct RemoteNodeView: Encodable {
    var nodeID: String
    var incarnation: UInt64
    var lastSequence: UInt64
    var lastEventAt: String?
    /// Milliseconds since this node applied the origin's last event.
    var freshnessMilliseconds: Int64?
    /// `direct`, `via <relay>`, `snapshot` (known only from a peer's snapshot so far),
    /// or `unreachable` (no path to it in the link graph).
    var path: String
    var linked: Bool
    var state: NodeStateView

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", incarnation, lastSequence = "last_sequence", lastEventAt = "last_event_at"
        case freshnessMilliseconds = "freshness_ms", path, linked, state
    }
}

