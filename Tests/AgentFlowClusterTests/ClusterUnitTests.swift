@testable import AgentFlowCluster
import AgentFlowCore
import AgentFlowProto
import Foundation
import Logging
import Synchronization
import Testing

func logEvent(_ origin: String, incarnation: UInt64, sequence: UInt64, line: String = "") -> ClusterEvent {
    var log = Agentflow_Mesh_V1_TaskLog()
    log.header.origin = origin
    log.header.incarnation = incarnation
    log.header.sequence = sequence
    log.task = "t"
    log.text = line.isEmpty ? "line \(sequence)" : line
    return .taskLog(log)
}

@Suite("Cluster store")
struct ClusterStoreTests {
    @Test("events apply in order; duplicates, stale incarnations and gaps are not applied")
    func ordering() {
        var store = ClusterStore(retainedPerOrigin: 100)
        #expect(store.apply(logEvent("a", incarnation: 5, sequence: 2), via: "a", nowMicros: 0) == .gap(expected: 1))
        #expect(store.apply(logEvent("a", incarnation: 5, sequence: 1), via: "a", nowMicros: 0) == .applied)
        #expect(store.apply(logEvent("a", incarnation: 5, sequence: 1), via: "a", nowMicros: 0) == .duplicate)
        #expect(store.apply(logEvent("a", incarnation: 5, sequence: 3), via: "a", nowMicros: 0) == .gap(expected: 2))
        #expect(store.apply(logEvent("a", incarnation: 5, sequence: 2), via: "a", nowMicros: 0) == .applied)
        #expect(store.apply(logEvent("a", incarnation: 4, sequence: 9), via: "a", nowMicros: 0) == .stale)
        #expect(store.origins["a"]?.state.recentLogs.map(\.text) == ["line 1", "line 2"])
        // A restart: the new incarnation starts over at 1 and its old state is gone.
        #expect(store.apply(logEvent("a", incarnation: 6, sequence: 2), via: "a", nowMicros: 0) == .gap(expected: 1))
        #expect(store.apply(logEvent("a", incarnation: 6, sequence: 1, line: "new run"), via: "b", nowMicros: 0) == .applied)
        #expect(store.origins["a"]?.state.recentLogs.map(\.text) == ["new run"])
        #expect(store.origins["a"]?.via == "b")
    }

    @Test("a peer's cursors get the missing events from the retained log, or a snapshot when the log no longer reaches")
    func missing() {
        var store = ClusterStore(retainedPerOrigin: 16)
        for sequence in UInt64(1)...40 { _ = store.apply(logEvent("a", incarnation: 1, sequence: sequence), via: nil, nowMicros: 0) }
        for sequence in UInt64(1)...5 { _ = store.apply(logEvent("b", incarnation: 2, sequence: sequence), via: nil, nowMicros: 0) }
        func cursor(_ origin: String, _ incarnation: UInt64, _ sequence: UInt64) -> Agentflow_Mesh_V1_OriginCursor {
            var cursor = Agentflow_Mesh_V1_OriginCursor()
            cursor.origin = origin
            cursor.incarnation = incarnation
            cursor.lastSequence = sequence
            return cursor
        }
        // Behind by 10 on a, current on b: ten events of a.
        var answer = store.missing(for: [cursor("a", 1, 30), cursor("b", 2, 5)])
        #expect(answer.events.map(\.header.sequence) == Array(31...40))
        #expect(answer.snapshots.isEmpty)
        // Behind by 30 on a (older than the 16 retained), nothing of b: a snapshot of a, all of b.
        answer = store.missing(for: [cursor("a", 1, 10)])
        #expect(answer.snapshots.map(\.origin) == ["a"] && answer.snapshots.first?.lastSequence == 40)
        #expect(answer.events.map(\.header.origin) == Array(repeating: "b", count: 5))
        // An older incarnation of b: all of the current one. Ahead or equal: nothing.
        answer = store.missing(for: [cursor("a", 1, 40), cursor("b", 1, 99)])
        #expect(answer.events.count == 5)
        #expect(store.missing(for: [cursor("a", 1, 40), cursor("b", 3, 1)]).events.isEmpty)

        // Snapshots are taken only when ahead.
        var other = ClusterStore()
        let first = other.applySnapshot(store.origins["a"]!.state, via: "x", nowMicros: 0)
        let again = other.applySnapshot(store.origins["a"]!.state, via: "x", nowMicros: 0)
        #expect(first && !again)
        #expect(other.apply(logEvent("a", incarnation: 1, sequence: 41), via: "x", nowMicros: 0) == .applied)
    }

    @Test("alerts: a rule raises after its hold time and clears once; task failures raise and clear")
    func alerts() {
        var engine = AlertEngine(rules: [AlertRule(id: "hot", metric: "cpu_percent", above: 90, holdFor: .seconds(30))])
        var status = Agentflow_Mesh_V1_NodeStatusUpdate()
        status.cpuPercent = 95
        let start = ContinuousClock.now
        #expect(engine.evaluate(status, now: start).isEmpty)
        #expect(engine.evaluate(status, now: start + .seconds(10)).isEmpty)
        let raised = engine.evaluate(status, now: start + .seconds(31))
        #expect(raised.count == 1 && raised[0].active && raised[0].alertID == "hot")
        #expect(engine.evaluate(status, now: start + .seconds(40)).isEmpty, "raised once")
        status.cpuPercent = 10
        let cleared = engine.evaluate(status, now: start + .seconds(41))
        #expect(cleared.count == 1 && !cleared[0].active)
        #expect(engine.evaluate(status, now: start + .seconds(42)).isEmpty)

        var task = Agentflow_Mesh_V1_TaskStatus()
        task.task = "backup"
        task.state = .failed
        #expect(engine.evaluate(task)?.active == true)
        task.state = .running
        #expect(engine.evaluate(task)?.active == false)
        #expect(engine.evaluate(task) == nil)
    }
}

@Suite("Task supervisor")
struct TaskSupervisorTests {
    final class Events: Sendable {
        let list = Mutex<[ClusterEvent]>([])
        func add(_ event: ClusterEvent) { list.withLock { $0.append(event) } }
        var tasks: [Agentflow_Mesh_V1_TaskStatus] { list.withLock { $0.compactMap { if case .taskStatus(let t) = $0 { t } else { nil } } } }
        var lines: [Agentflow_Mesh_V1_TaskLog] { list.withLock { $0.compactMap { if case .taskLog(let l) = $0 { l } else { nil } } } }
    }

    func waitFor(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(condition())
    }

    @Test("a failing task is restarted by on-failure; its output lines become events")
    func restartPolicy() async throws {
        let events = Events()
        let supervisor = TaskSupervisor(
            tasks: [TaskSpec(name: "flaky", command: ["/bin/sh", "-c", "echo started; echo oops >&2; exit 3"], restart: .onFailure, restartDelay: .milliseconds(50))],
            logger: Logger(label: "test"), publish: { events.add($0) })
        supervisor.start()
        try await waitFor { events.tasks.filter { $0.state == .failed }.count >= 2 }
        let failed = try #require(events.tasks.last { $0.state == .failed })
        #expect(failed.exitCode == 3)
        #expect(events.tasks.contains { $0.state == .running && $0.restarts >= 1 })
        #expect(events.lines.contains { $0.text == "started" && $0.stream == .stdout })
        #expect(events.lines.contains { $0.text == "oops" && $0.stream == .stderr })
        _ = try await supervisor.perform("stop", task: "flaky")
        await supervisor.stopAll()
    }

    @Test("output beyond the rate limit is counted, not sent; stop and start work; unknown tasks are named")
    func rateLimitAndControl() async throws {
        let events = Events()
        let script = "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; sleep 1.2; echo after; exec sleep 30"
        let supervisor = TaskSupervisor(
            tasks: [TaskSpec(name: "chatty", command: ["/bin/sh", "-c", script], maxLogLinesPerSecond: 50)],
            logger: Logger(label: "test"), publish: { events.add($0) })
        supervisor.start()
        try await waitFor { events.lines.contains { $0.text == "after" } }
        #expect(events.lines.count == 51, "50 lines in the first second, then the next one")
        #expect(events.lines.last?.text == "after" && events.lines.last?.droppedBefore == 150)

        let clock = ContinuousClock()
        let start = clock.now
        let stopped = try await supervisor.perform("stop", task: "chatty")
        #expect(stopped == "chatty stopped")
        #expect(clock.now - start < .seconds(2), "SIGTERM ends it: the task does not inherit an ignored SIGTERM")
        try await waitFor { events.tasks.last?.state == .stopped }
        _ = try await supervisor.perform("start", task: "chatty")
        try await waitFor { events.tasks.last?.state == .running }
        await #expect(throws: TaskSupervisor.ActionError.self) { try await supervisor.perform("start", task: "nope") }
        await supervisor.stopAll()
    }
}

@Suite("Command journal")
struct CommandJournalTests {
    func command(_ id: String, from origin: String = "a", to target: String = "b", action: String = "ping") -> Agentflow_Mesh_V1_Command {
        var command = Agentflow_Mesh_V1_Command()
        command.commandID = id
        command.origin = origin
        command.target = target
        command.action = action
        return command
    }

    @Test("stages advance once each, every change bumps the version, and a reader gets only what changed since its version")
    func stages() {
        var journal = CommandJournal(capacity: 3)
        journal.add(command("c1"), role: .issued, stage: .sent, atMicros: 1_000)
        journal.add(command("c2", from: "b", to: "a"), role: .ran, stage: .running, atMicros: 1_100)
        let seen = journal.version
        #expect(seen == 2 && journal.changed(since: seen).isEmpty)
        journal.receipt("c1", atMicros: 1_500)
        journal.receipt("c1", atMicros: 1_900)  // a second receipt changes nothing
        journal.answered("c1", role: .issued, CommandRouter.Result(status: .ok, output: "pong from b"), atMicros: 2_000)
        journal.ended("c1", stage: .noAnswer, atMicros: 9_000)  // the caller's later forget does not undo the answer
        #expect(journal.version == 4)
        let changed = journal.changed(since: seen)
        #expect(changed.map(\.commandID) == ["c1"])
        #expect(changed.first?.stage == .answered && changed.first?.status == "ok" && changed.first?.receiptAtMicros == 1_500 && changed.first?.finishedAtMicros == 2_000)
        // The ran entry is found by its role, not by the issued one of the same id.
        journal.answered("c2", role: .issued, CommandRouter.Result(status: .failed), atMicros: 3_000)
        #expect(journal.entries.first { $0.commandID == "c2" }?.stage == .running)
        journal.answered("c2", role: .ran, CommandRouter.Result(status: .refused, message: String(repeating: "x", count: 5_000)), atMicros: 3_000)
        #expect(journal.entries.first { $0.commandID == "c2" }?.status == "refused")
        #expect(journal.entries.first { $0.commandID == "c2" }?.message?.utf8.count == CommandJournal.outputLimit)
        // Bounded: the oldest go.
        for id in ["c3", "c4", "c5"] { journal.add(command(id), role: .issued, stage: .sent, atMicros: 4_000) }
        #expect(journal.entries.map(\.commandID) == ["c3", "c4", "c5"])
        journal.ended("c4", stage: .noAnswer, message: "no result", atMicros: 5_000)
        #expect(journal.entries.first { $0.commandID == "c4" }?.stage == .noAnswer)
        #expect(journal.changed(since: journal.version - 1).map(\.commandID) == ["c4"])
    }
}
