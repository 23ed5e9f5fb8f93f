import AgentFlowCore
import SwiftProtobuf
public import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import Logging
import Synchronization

/// What a master knows first-hand and publishes: its host's status on an
/// interval, its supervised tasks, alerts from rules, tasks and local
/// programs. Also the actions commands may run here.
public final class LocalMonitor: CommandActions, Sendable {
    public let cluster: ClusterNode
    public let interval: Duration
    let logger: Logger
    let sampler: Mutex<StatusSampler>
    let alerts: Mutex<AlertEngine>
    public let tasks: TaskSupervisor

    public init(cluster: ClusterNode, interval: Duration, diskPaths: [String], rules: [AlertRule], tasks: [TaskSpec], logger: Logger) {
        self.cluster = cluster
        self.interval = interval
        self.logger = logger
        sampler = Mutex(StatusSampler(diskPaths: diskPaths))
        alerts = Mutex(AlertEngine(rules: rules))
        let box = PublishBox()
        self.tasks = TaskSupervisor(tasks: tasks, logger: logger, publish: { box.publish?($0) })
        box.set { [weak self] event in self?.publish(event) }
    }

    /// Publishes a local event, and the alert change it causes (a task's failure).
    public func publish(_ event: ClusterEvent) {
        cluster.publish(event)
        if case .taskStatus(let task) = event, let alert = alerts.withLock({ $0.evaluate(task) }) {
            cluster.publish(.alert(alert))
        }
    }

    /// Raises or clears an alert from a program on the host; nil when nothing changed.
    @discardableResult
    public func setAlert(id: String, severity: Agentflow_Mesh_V1_AlertSeverity, summary: String, details: [String: String], active: Bool) -> ClusterEvent? {
        guard let alert = alerts.withLock({ $0.set(id, severity: severity, summary: summary, details: details, active: active, refresh: active) }) else { return nil }
        return cluster.publish(.alert(alert))
    }

    /// Samples and publishes status (and rule alerts) every `interval`, from now until cancelled.
    public func run() async {
        tasks.start()
        while !Task.isCancelled {
            let status = sampler.withLock { $0.sample() }
            cluster.publish(.status(status))
            for alert in alerts.withLock({ $0.evaluate(status) }) { cluster.publish(.alert(alert)) }
            try? await Task.sleep(for: interval)
        }
        await tasks.stopAll()
    }

    // MARK: CommandActions

    /// The actions a master knows.
    public static let actions: Set<String> = ["ping", "status", "task.start", "task.stop", "task.restart"]

    public var knownActions: Set<String> { Self.actions }

    public func perform(_ action: String, args: [String: String]) async -> CommandRouter.Result {
        switch action {
        case "ping":
            return .init(status: .ok, output: "pong from \(cluster.localID)")
        case "status":
            // The same snake_case object `GET /api/cluster/status` shows for an origin.
            let state = cluster.origins()[cluster.localID.rawValue]?.state ?? Agentflow_Mesh_V1_NodeState()
            return .init(status: .ok, output: NodeStateView.json(state))
        case "task.start", "task.stop", "task.restart":
            guard let name = args["task"], !name.isEmpty else {
                return .init(status: .failed, exitCode: 2, message: "\(action) needs args.task: the task's name (tasks: \(tasks.taskNames.joined(separator: ", ")))")
            }
            do {
                let output = try await tasks.perform(String(action.dropFirst("task.".count)), task: name)
                return .init(status: .ok, output: output)
            } catch {
                return .init(status: .failed, exitCode: 2, message: "\(error)")
            }
        default:
            return .init(status: .unknownAction, message: "no action \(action)")
        }
    }
}

/// Lets the supervisor call back into the monitor that owns it (set once, right after init).
private final class PublishBox: Sendable {
    private let value = Mutex<(@Sendable (ClusterEvent) -> Void)?>(nil)
    var publish: (@Sendable (ClusterEvent) -> Void)? { value.withLock { $0 } }
    func set(_ publish: @escaping @Sendable (ClusterEvent) -> Void) { value.withLock { $0 = publish } }
}
