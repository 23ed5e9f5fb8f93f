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
            let direct = peers[id]?.state == .connected
            // No path in the link graph: say so, whatever the last event came through.
            let reachable = NodeID(id).map(topology.isReachable) ?? false
            let path: String = direct ? "direct" : !reachable ? "unreachable"
                : origin.via.map { $0 == id ? "direct (link now down)" : "via \($0)" } ?? "snapshot"
            return RemoteNodeView(
                nodeID: id, incarnation: origin.state.incarnation, lastSequence: origin.state.lastSequence,
                lastEventAt: origin.state.lastEventUnixMicros > 0 ? Self.time(origin.state.lastEventUnixMicros) : nil,
                freshnessMilliseconds: origin.lastAppliedAtMicros > 0 ? max(0, (nowMicros - origin.lastAppliedAtMicros) / 1_000) : nil,
                path: path, linked: direct, state: NodeStateView(origin.state))
        }
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

/// An origin's state as JSON.
struct NodeStateView: Encodable {
    struct Status: Encodable {
        var cpuPercent: Double
        var memoryUsedBytes: UInt64
        var memoryTotalBytes: UInt64
        var load: [Double]
        var disks: [Disk]
        var networkRxBytes: UInt64
        var networkTxBytes: UInt64
        var uptimeSeconds: UInt64
        var sampledAt: String?
        enum CodingKeys: String, CodingKey {
            case cpuPercent = "cpu_percent", memoryUsedBytes = "memory_used_bytes", memoryTotalBytes = "memory_total_bytes", load, disks
            case networkRxBytes = "network_rx_bytes", networkTxBytes = "network_tx_bytes", uptimeSeconds = "uptime_seconds", sampledAt = "sampled_at"
        }
    }
    struct Disk: Encodable {
        var path: String
        var usedBytes: UInt64
        var totalBytes: UInt64
        enum CodingKeys: String, CodingKey { case path, usedBytes = "used_bytes", totalBytes = "total_bytes" }
    }
    struct TaskView: Encodable {
        var task: String
        var state: String
        var exitCode: Int32
        var startedAt: String?
        var restarts: UInt32
        var message: String
        enum CodingKeys: String, CodingKey { case task, state, exitCode = "exit_code", startedAt = "started_at", restarts, message }
    }
    struct AlertView: Encodable {
        var alertID: String
        var severity: String
        var summary: String
        var details: [String: String]
        var raisedAt: String
        enum CodingKeys: String, CodingKey { case alertID = "alert_id", severity, summary, details, raisedAt = "raised_at" }
    }
    struct LogView: Encodable {
        var task: String
        var stream: String
        var line: String
        var at: String
        var droppedBefore: UInt32
        enum CodingKeys: String, CodingKey { case task, stream, line, at, droppedBefore = "dropped_before" }
    }

    var status: Status?
    var tasks: [TaskView]
    var alerts: [AlertView]
    var recentLogs: [LogView]

    enum CodingKeys: String, CodingKey { case status, tasks, alerts, recentLogs = "recent_logs" }

    init(_ state: Agentflow_Mesh_V1_NodeState) {
        let time = ClusterStatusView.time
        if state.hasStatus {
            let s = state.status
            status = Status(
                cpuPercent: (s.cpuPercent * 100).rounded() / 100, memoryUsedBytes: s.memoryUsedBytes, memoryTotalBytes: s.memoryTotalBytes,
                load: [s.load1M, s.load5M, s.load15M], disks: s.disks.map { Disk(path: $0.path, usedBytes: $0.usedBytes, totalBytes: $0.totalBytes) },
                networkRxBytes: s.networkRxBytes, networkTxBytes: s.networkTxBytes, uptimeSeconds: s.uptimeSeconds,
                sampledAt: s.header.timestampUnixMicros > 0 ? time(s.header.timestampUnixMicros) : nil)
        }
        tasks = state.tasks.map {
            TaskView(task: $0.task, state: Self.name($0.state), exitCode: $0.exitCode,
                     startedAt: $0.startedAtUnixMicros > 0 ? time($0.startedAtUnixMicros) : nil, restarts: $0.restarts, message: $0.message)
        }
        alerts = state.activeAlerts.map {
            AlertView(alertID: $0.alertID, severity: Self.name($0.severity), summary: $0.summary, details: $0.details, raisedAt: time($0.header.timestampUnixMicros))
        }
        recentLogs = state.recentLogs.map {
            LogView(task: $0.task, stream: $0.stream == .stderr ? "stderr" : "stdout", line: $0.line, at: time($0.header.timestampUnixMicros), droppedBefore: $0.droppedBefore)
        }
    }

    static func name(_ state: Agentflow_Mesh_V1_TaskState) -> String {
        switch state {
        case .pending: "pending"
        case .running: "running"
        case .exited: "exited"
        case .failed: "failed"
        case .stopped: "stopped"
        default: "unknown"
        }
    }

    static func name(_ severity: Agentflow_Mesh_V1_AlertSeverity) -> String {
        switch severity {
        case .info: "info"
        case .warning: "warning"
        case .critical: "critical"
        default: "unknown"
        }
    }
}
