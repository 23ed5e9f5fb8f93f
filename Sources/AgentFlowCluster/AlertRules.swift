public import AgentFlowProto
import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An alert rule from config: a status value past a threshold for a while.
public struct AlertRule: Sendable, Hashable {
    public var id: String
    /// One of `NodeStatusUpdate.metricNames`.
    public var metric: String
    public var above: Double?
    public var below: Double?
    /// How long the condition must hold before the alert is raised.
    public var holdFor: Duration
    public var severity: Agentflow_Mesh_V1_AlertSeverity
    public var summary: String

    public init(id: String, metric: String, above: Double? = nil, below: Double? = nil, holdFor: Duration = .zero,
                severity: Agentflow_Mesh_V1_AlertSeverity = .warning, summary: String? = nil) {
        self.id = id
        self.metric = metric
        self.above = above
        self.below = below
        self.holdFor = holdFor
        self.severity = severity
        self.summary = summary ?? "\(metric) \(above.map { "above \($0)" } ?? "")\(below.map { "below \($0)" } ?? "")"
    }

    func holds(_ value: Double) -> Bool {
        if let above, value <= above { return false }
        if let below, value >= below { return false }
        return true
    }
}

/// Raises and clears alerts: from rules over status samples, from task
/// failures, and from programs on the host (the publish API). Only changes
/// become events: a raised alert is not raised again until it has cleared.
public struct AlertEngine: Sendable {
    public let rules: [AlertRule]
    private var conditionSince: [String: ContinuousClock.Instant] = [:]
    private(set) var active: [String: Agentflow_Mesh_V1_Alert] = [:]

    public init(rules: [AlertRule]) {
        self.rules = rules
    }

    /// The alert events a new status sample causes.
    public mutating func evaluate(_ status: Agentflow_Mesh_V1_NodeStatusUpdate, now: ContinuousClock.Instant = .now) -> [Agentflow_Mesh_V1_Alert] {
        var changes: [Agentflow_Mesh_V1_Alert] = []
        for rule in rules {
            guard let value = status.metric(rule.metric) else { continue }
            if rule.holds(value) {
                let since = conditionSince[rule.id] ?? now
                conditionSince[rule.id] = since
                if now - since >= rule.holdFor, active[rule.id] == nil {
                    changes.append(set(rule.id, severity: rule.severity, summary: rule.summary, details: [rule.metric: value.fixed(2)], active: true)!)
                }
            } else {
                conditionSince[rule.id] = nil
                if let cleared = set(rule.id, severity: rule.severity, summary: rule.summary, details: [rule.metric: value.fixed(2)], active: false) {
                    changes.append(cleared)
                }
            }
        }
        return changes
    }

    /// The alert event a task's new state causes (a failed task raises `task.<name>.failed`; running again clears it).
    public mutating func evaluate(_ task: Agentflow_Mesh_V1_TaskStatus) -> Agentflow_Mesh_V1_Alert? {
        let id = "task.\(task.task).failed"
        switch task.state {
        case .failed:
            return set(id, severity: .critical, summary: "task \(task.task) failed: \(task.message)", details: ["exit_code": String(task.exitCode)], active: true, refresh: true)
        case .running, .stopped, .exited:
            return set(id, severity: .critical, summary: "task \(task.task) \(task.state == .running ? "is running again" : "ended")", details: [:], active: false)
        default:
            return nil
        }
    }

    /// Records an alert change; returns the event to publish, or nil when nothing changes.
    public mutating func set(_ id: String, severity: Agentflow_Mesh_V1_AlertSeverity, summary: String, details: [String: String], active isActive: Bool, refresh: Bool = false) -> Agentflow_Mesh_V1_Alert? {
        if isActive, active[id] != nil, !refresh { return nil }
        if !isActive, active[id] == nil { return nil }
        var alert = Agentflow_Mesh_V1_Alert()
        alert.alertID = id
        alert.severity = severity
        alert.summary = summary
        alert.details = details
        alert.active = isActive
        if isActive { active[id] = alert } else { active[id] = nil }
        return alert
    }
}
