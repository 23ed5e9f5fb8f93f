import AgentFlowProto
import Foundation
public import Logging
import Synchronization

/// A task a master supervises, from the `tasks:` list of its config.
public struct TaskSpec: Sendable, Hashable {
    public enum RestartPolicy: String, Sendable, CaseIterable {
        case never
        case onFailure = "on-failure"
        case always
    }

    public var name: String
    /// argv: the program and its arguments (no shell).
    public var command: [String]
    public var restart: RestartPolicy
    public var autostart: Bool
    public var restartDelay: Duration
    /// Output lines beyond this rate become a count (`TaskLog.dropped_before`), not events.
    public var maxLogLinesPerSecond: Int

    public init(name: String, command: [String], restart: RestartPolicy = .never, autostart: Bool = true,
                restartDelay: Duration = .seconds(1), maxLogLinesPerSecond: Int = 100) {
        self.name = name
        self.command = command
        self.restart = restart
        self.autostart = autostart
        self.restartDelay = restartDelay
        self.maxLogLinesPerSecond = maxLogLinesPerSecond
    }
}

/// Runs the configured tasks: start, stop, restart, restart policy; every
/// state change becomes a `TaskStatus` event and every output line a
/// `TaskLog` event (rate-limited, each line at most 4 KiB).
public final class TaskSupervisor: Sendable {
    let publish: @Sendable (ClusterEvent) -> Void
    let logger: Logger
    private let runners: [String: TaskRunner]

    public init(tasks: [TaskSpec], logger: Logger, publish: @escaping @Sendable (ClusterEvent) -> Void) {
        self.publish = publish
        self.logger = logger
        runners = Dictionary(uniqueKeysWithValues: tasks.map { ($0.name, TaskRunner(spec: $0, logger: logger, publish: publish)) })
    }

    public var taskNames: [String] { runners.keys.sorted() }

    /// Announces every task and starts the autostart ones.
    public func start() {
        for runner in runners.values.sorted(by: { $0.spec.name < $1.spec.name }) {
            if runner.spec.autostart { _ = runner.start() } else { runner.announce(.pending, message: "not started (autostart: false)") }
        }
    }

    /// Stops every task (SIGTERM, then SIGKILL after `grace`).
    public func stopAll(grace: Duration = .seconds(5)) async {
        await withTaskGroup(of: Void.self) { group in
            for runner in runners.values { group.addTask { _ = await runner.stop(grace: grace) } }
        }
    }

    public enum ActionError: Error, CustomStringConvertible {
        case unknownTask(String, known: [String])
        public var description: String {
            switch self {
            case .unknownTask(let name, let known): "no task \"\(name.prefix(64))\"; tasks: \(known.isEmpty ? "none configured" : known.joined(separator: ", "))"
            }
        }
    }

    /// `start`, `stop` or `restart` a task by name; returns what happened.
    public func perform(_ verb: String, task name: String) async throws(ActionError) -> String {
        guard let runner = runners[name] else { throw .unknownTask(name, known: taskNames) }
        switch verb {
        case "start": return runner.start()
        case "stop": return await runner.stop(grace: .seconds(5))
        default:
            _ = await runner.stop(grace: .seconds(5))
            return runner.start()
        }
    }
}

/// One task's process and state. Its mutable state is behind a lock: the
/// process's callbacks arrive on Foundation's threads.
final class TaskRunner: Sendable {
    let spec: TaskSpec
    let logger: Logger
    let publish: @Sendable (ClusterEvent) -> Void

    private struct State {
        var process: Process?
        var stopRequested = false
        var restarts: UInt32 = 0
        var startedAtMicros: Int64 = 0
        var windowStart = ContinuousClock.now
        var linesInWindow = 0
        var dropped: UInt32 = 0
        var partial: [TaskLogStreamKey: [UInt8]] = [:]
    }

    enum TaskLogStreamKey: Hashable { case stdout, stderr }

    private let state = Mutex(State())

    init(spec: TaskSpec, logger: Logger, publish: @escaping @Sendable (ClusterEvent) -> Void) {
        self.spec = spec
        self.logger = logger
        self.publish = publish
    }

    func announce(_ taskState: Agentflow_Mesh_V1_TaskState, exitCode: Int32 = 0, message: String = "") {
        var status = Agentflow_Mesh_V1_TaskStatus()
        status.task = spec.name
        status.state = taskState
        status.exitCode = exitCode
        status.message = message
        state.withLock { state in
            status.startedAtUnixMicros = state.startedAtMicros
            status.restarts = state.restarts
        }
        publish(.taskStatus(status))
    }

    /// GNU env can reset every signal to its default before exec: a task must not
    /// inherit this process's ignored SIGPIPE (NIO ignores it), nor anything a
    /// host process ignores, or it would not die of SIGTERM or a closed pipe.
    static let signalResetter: String? = {
        let probe = Process()
        probe.executableURL = URL(filePath: "/usr/bin/env")
        probe.arguments = ["--default-signal", "/bin/true"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return nil }
        probe.waitUntilExit()
        return probe.terminationStatus == 0 ? "/usr/bin/env" : nil
    }()

    func start() -> String {
        let process = Process()
        if let resetter = Self.signalResetter {
            process.executableURL = URL(filePath: resetter)
            process.arguments = ["--default-signal"] + spec.command
        } else {
            process.executableURL = URL(filePath: spec.command[0])
            process.arguments = Array(spec.command.dropFirst())
        }
        process.standardInput = FileHandle.nullDevice
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let already = state.withLock { state -> Bool in
            if let running = state.process, running.isRunning { return true }
            state.stopRequested = false
            state.process = process
            return false
        }
        if already { return "\(spec.name) is already running" }
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in self?.consume(handle.availableData, from: .stdout, handle: handle) }
        err.fileHandleForReading.readabilityHandler = { [weak self] handle in self?.consume(handle.availableData, from: .stderr, handle: handle) }
        process.terminationHandler = { [weak self] process in self?.exited(process) }
        do {
            try process.run()
        } catch {
            out.fileHandleForReading.readabilityHandler = nil
            err.fileHandleForReading.readabilityHandler = nil
            state.withLock { $0.process = nil }
            announce(.failed, exitCode: -1, message: "cannot start \(spec.command[0]): \(error)")
            logger.warning("task \(spec.name): cannot start \(spec.command[0]): \(error)")
            return "cannot start \(spec.name): \(error)"
        }
        state.withLock { $0.startedAtMicros = Int64(Date().timeIntervalSince1970 * 1_000_000) }
        announce(.running, message: "pid \(process.processIdentifier)")
        logger.info("task \(spec.name) started (pid \(process.processIdentifier))")
        return "\(spec.name) started (pid \(process.processIdentifier))"
    }

    func stop(grace: Duration) async -> String {
        guard let process = state.withLock({ state -> Process? in
            state.stopRequested = true
            return state.process
        }), process.isRunning else { return "\(spec.name) is not running" }
        process.terminate()
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        }
        return "\(spec.name) stopped"
    }

    private func exited(_ process: Process) {
        // Let the pipes drain what the process wrote last.
        (process.standardOutput as? Pipe)?.fileHandleForReading.readabilityHandler = nil
        (process.standardError as? Pipe)?.fileHandleForReading.readabilityHandler = nil
        for (pipe, key) in [(process.standardOutput as? Pipe, TaskLogStreamKey.stdout), (process.standardError as? Pipe, .stderr)] {
            if let rest = try? pipe?.fileHandleForReading.readToEnd(), !rest.isEmpty { consume(rest, from: key, handle: nil) }
            flushPartial(key)
        }
        let code = process.terminationStatus
        let byRequest = state.withLock { state -> Bool in
            if state.process === process { state.process = nil }
            return state.stopRequested
        }
        let signalled = process.terminationReason == .uncaughtSignal
        if byRequest {
            announce(.stopped, exitCode: code, message: "stopped on request")
            return
        }
        let failed = signalled || code != 0
        announce(failed ? .failed : .exited, exitCode: code, message: signalled ? "killed by signal \(code)" : "exited with \(code)")
        logger.log(level: failed ? .warning : .info, "task \(spec.name) \(failed ? "failed" : "exited") (\(signalled ? "signal" : "code") \(code))")
        let again = spec.restart == .always || (spec.restart == .onFailure && failed)
        guard again else { return }
        let delay = spec.restartDelay
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard let self, !self.state.withLock({ $0.stopRequested }) else { return }
            self.state.withLock { $0.restarts += 1 }
            _ = self.start()
        }
    }

    private func consume(_ data: Data, from key: TaskLogStreamKey, handle: FileHandle?) {
        if data.isEmpty {
            handle?.readabilityHandler = nil
            return
        }
        let lines = state.withLock { state -> [[UInt8]] in
            var buffer = state.partial[key, default: []]
            buffer.append(contentsOf: data)
            var lines: [[UInt8]] = []
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(Array(buffer[..<newline]))
                buffer.removeSubrange(...newline)
            }
            if buffer.count > 4_096 {  // a line longer than the limit is cut, not held forever
                lines.append(Array(buffer.prefix(4_096)))
                buffer.removeAll()
            }
            state.partial[key] = buffer
            return lines
        }
        for line in lines { emit(line, from: key) }
    }

    private func flushPartial(_ key: TaskLogStreamKey) {
        let rest = state.withLock { state -> [UInt8] in
            defer { state.partial[key] = [] }
            return state.partial[key] ?? []
        }
        if !rest.isEmpty { emit(rest, from: key) }
    }

    private func emit(_ bytes: [UInt8], from key: TaskLogStreamKey) {
        let dropped = state.withLock { state -> UInt32? in
            let now = ContinuousClock.now
            if now - state.windowStart >= .seconds(1) {
                state.windowStart = now
                state.linesInWindow = 0
            }
            guard state.linesInWindow < spec.maxLogLinesPerSecond else {
                state.dropped += 1
                return nil
            }
            state.linesInWindow += 1
            defer { state.dropped = 0 }
            return state.dropped
        }
        guard let dropped else { return }
        var line = Agentflow_Mesh_V1_TaskLog()
        line.task = spec.name
        line.stream = key == .stdout ? .stdout : .stderr
        line.line = Data(bytes.prefix(4_096))
        line.droppedBefore = dropped
        publish(.taskLog(line))
    }
}
