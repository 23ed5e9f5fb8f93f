import AgentFlowCore
public import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An origin's state as JSON, snake_case: what `GET /api/cluster/status`
/// shows for every origin and what the `status` command answers.
public struct NodeStateView: Encodable, Sendable {
    public struct Status: Encodable, Sendable {
        public var cpuPercent: Double
        public var memoryUsedBytes: UInt64
        public var memoryTotalBytes: UInt64
        public var load: [Double]
        public var disks: [Disk]
        public var networkRxBytes: UInt64
        public var networkTxBytes: UInt64
        public var uptimeSeconds: UInt64
        public var sampledAt: String?
        public enum CodingKeys: String, CodingKey {
            case cpuPercent = "cpu_percent", memoryUsedBytes = "memory_used_bytes", memoryTotalBytes = "memory_total_bytes", load, disks
            case networkRxBytes = "network_rx_bytes", networkTxBytes = "network_tx_bytes", uptimeSeconds = "uptime_seconds", sampledAt = "sampled_at"
        }
    }
    public struct Disk: Encodable, Sendable {
        public var path: String
        public var usedBytes: UInt64
        public var totalBytes: UInt64
        public enum CodingKeys: String, CodingKey { case path, usedBytes = "used_bytes", totalBytes = "total_bytes" }
    }
    public struct TaskView: Encodable, Sendable {
        public var task: String
        public var state: String
        public var exitCode: Int32
        public var startedAt: String?
        public var restarts: UInt32
        public var message: String
        public enum CodingKeys: String, CodingKey { case task, state, exitCode = "exit_code", startedAt = "started_at", restarts, message }
    }
    public struct AlertView: Encodable, Sendable {
        public var alertID: String
        public var severity: String
        public var summary: String
        public var details: [String: String]
        public var raisedAt: String
        public enum CodingKeys: String, CodingKey { case alertID = "alert_id", severity, summary, details, raisedAt = "raised_at" }
    }
    public struct LogView: Encodable, Sendable {
        public var task: String
        public var stream: String
        public var line: String
        public var at: String
        public var droppedBefore: UInt32
        public enum CodingKeys: String, CodingKey { case task, stream, line, at, droppedBefore = "dropped_before" }
    }

    public var status: Status?
    public var tasks: [TaskView]
    public var alerts: [AlertView]
    public var recentLogs: [LogView]

    public enum CodingKeys: String, CodingKey { case status, tasks, alerts, recentLogs = "recent_logs" }

    public init(_ state: Agentflow_Mesh_V1_NodeState) {
        let time = { (micros: Int64) in Timestamp.string(unixMicros: micros) }
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
            LogView(task: $0.task, stream: $0.stream == .stderr ? "stderr" : "stdout", line: $0.text, at: time($0.header.timestampUnixMicros), droppedBefore: $0.droppedBefore)
        }
    }

    public static func name(_ state: Agentflow_Mesh_V1_TaskState) -> String {
        switch state {
        case .pending: "pending"
        case .running: "running"
        case .exited: "exited"
        case .failed: "failed"
        case .stopped: "stopped"
        default: "unknown"
        }
    }

    public static func name(_ severity: Agentflow_Mesh_V1_AlertSeverity) -> String {
        switch severity {
        case .info: "info"
        case .warning: "warning"
        case .critical: "critical"
        default: "unknown"
        }
    }
}

extension NodeStateView {
    /// The view as a JSON object's text (keys sorted).
    public static func json(_ state: Agentflow_Mesh_V1_NodeState) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(NodeStateView(state))).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
