#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The cluster-state blocks of a master's config: `state:`, `monitor:`,
/// `tasks:`, `alerts:` and `commands:`. Plain values; the cluster module
/// turns them into its own types.
public struct ClusterSettings: Sendable {
    /// `state:` — how events flow.
    public var retainedEvents: Int
    public var syncInterval: ConfigDuration
    public var hopLimit: Int
    public var recentLogLines: Int
    /// Lazy push of the broadcast tree: announcements, and how long an announced event may take.
    public var announceInterval: ConfigDuration
    public var graftTimeout: ConfigDuration
    /// `monitor:` — the local status sampler.
    public var monitorInterval: ConfigDuration
    public var diskPaths: [String]
    public var tasks: [TaskSettings]
    public var alerts: [AlertSettings]
    /// `commands:` — what peers may run here, and how long a command issued here waits.
    public var allowedActions: [String]
    public var commandTimeout: ConfigDuration

    public struct TaskSettings: Sendable, Hashable {
        public var name: String
        public var command: [String]
        /// `never`, `on-failure` or `always`.
        public var restart: String
        public var autostart: Bool
        public var restartDelay: ConfigDuration
        public var maxLogLinesPerSecond: Int
    }

    public struct AlertSettings: Sendable, Hashable {
        public var id: String
        public var metric: String
        public var above: Double?
        public var below: Double?
        public var holdFor: ConfigDuration
        /// `info`, `warning` or `critical`.
        public var severity: String
        public var summary: String?
    }

    public static let actions = ["ping", "status", "task.start", "task.stop", "task.restart"]
    public static let metrics = ["cpu_percent", "memory_percent", "load_1m", "load_5m", "load_15m", "disk_percent"]

    enum Restart: String, ConfigEnum { case never, onFailure = "on-failure", always }
    enum Severity: String, ConfigEnum { case info, warning, critical }

    static func decode(from root: ConfigSection) throws(ConfigError) -> ClusterSettings {
        let state = try root.section("state")
        let retained: Int = try state.value("retained_events", default: 4_096, in: 16...1_000_000)
        let syncInterval: ConfigDuration = try state.value("sync_interval", default: .seconds(5), in: .milliseconds(100) ... .seconds(3_600))
        let hopLimit: Int = try state.value("hop_limit", default: 16, in: 1...255)
        let recent: Int = try state.value("recent_log_lines", default: 50, in: 0...10_000)
        let announce: ConfigDuration = try state.value("announce_interval", default: .milliseconds(100), in: .milliseconds(10) ... .seconds(10))
        let graft: ConfigDuration = try state.value("graft_timeout", default: .milliseconds(250), in: .milliseconds(10) ... .seconds(60))
        try state.finish()

        let monitor = try root.section("monitor")
        let interval: ConfigDuration = try monitor.value("interval", default: .seconds(5), in: .milliseconds(100) ... .seconds(3_600))
        let disks: [String] = try monitor.list("disks", default: ["/"])
        for (index, disk) in disks.enumerated() where !disk.hasPrefix("/") {
            throw ConfigError(.invalidValue, path: monitor.path.appending(key: "disks").appending(index: index), value: disk,
                              expected: "an absolute path of a mounted filesystem", source: monitor.source)
        }
        try monitor.finish()

        var tasks: [TaskSettings] = []
        for section in try root.sections("tasks") {
            let name: String = try section.value("name", default: "", validate: { NodeID.isValid($0) ? nil : "a task name: \(NodeID.rules)" })
            let command: [String] = try section.list("command", default: [])
            guard let program = command.first, program.hasPrefix("/") else {
                throw ConfigError(.invalidValue, path: section.path.appending(key: "command"), value: command.first ?? "",
                                  expected: "argv as a list, starting with an absolute program path, e.g. [/usr/bin/python3, worker.py]", source: section.source)
            }
            guard FileManager.default.isExecutableFile(atPath: program) else {
                throw ConfigError(.invalidValue, path: section.path.appending(key: "command").appending(index: 0), value: program,
                                  expected: "expected an executable program, and \(program) does not exist or is not executable", source: section.source)
            }
            if tasks.contains(where: { $0.name == name }) {
                throw ConfigError(.invalidValue, path: section.path.appending(key: "name"), value: name, expected: "task names must be unique", source: section.source)
            }
            tasks.append(TaskSettings(
                name: name, command: command,
                restart: try section.value("restart", default: Restart.never).rawValue,
                autostart: try section.value("autostart", default: true),
                restartDelay: try section.value("restart_delay", default: ConfigDuration.seconds(1), in: ConfigDuration.milliseconds(10) ... ConfigDuration.seconds(3_600)),
                maxLogLinesPerSecond: try section.value("max_log_lines_per_second", default: 100, in: 1...100_000)))
            try section.finish()
        }

        var alerts: [AlertSettings] = []
        for section in try root.sections("alerts") {
            let id: String = try section.value("id", default: "", validate: { NodeID.isValid($0) ? nil : "an alert id: \(NodeID.rules)" })
            let metric: String = try section.value("metric", default: "", validate: { metrics.contains($0) ? nil : "one of \(metrics.joined(separator: ", "))" })
            let above: Double? = section.contains("above") ? try section.value("above", default: 0.0) : nil
            let below: Double? = section.contains("below") ? try section.value("below", default: 0.0) : nil
            if above == nil && below == nil {
                throw ConfigError(.missingKey, path: section.path.appending(key: "above"), value: nil, expected: "an alert rule needs `above` or `below` (or both)", source: section.source)
            }
            alerts.append(AlertSettings(
                id: id, metric: metric, above: above, below: below,
                holdFor: try section.value("for", default: ConfigDuration.seconds(0), in: ConfigDuration.seconds(0) ... ConfigDuration.seconds(86_400)),
                severity: try section.value("severity", default: Severity.warning).rawValue,
                summary: section.contains("summary") ? try section.value("summary", default: "") : nil))
            try section.finish()
        }

        let commands = try root.section("commands")
        let allow: [String] = try commands.list("allow", default: ["ping", "status"])
        for (index, action) in allow.enumerated() where !actions.contains(action) {
            throw ConfigError(.invalidValue, path: commands.path.appending(key: "allow").appending(index: index), value: action,
                              expected: "one of \(actions.joined(separator: ", "))", source: commands.source)
        }
        let timeout: ConfigDuration = try commands.value("timeout", default: .seconds(10), in: .milliseconds(100) ... .seconds(3_600))
        try commands.finish()

        return ClusterSettings(
            retainedEvents: retained, syncInterval: syncInterval, hopLimit: hopLimit, recentLogLines: recent,
            announceInterval: announce, graftTimeout: graft,
            monitorInterval: interval, diskPaths: disks, tasks: tasks, alerts: alerts, allowedActions: allow, commandTimeout: timeout)
    }
}
