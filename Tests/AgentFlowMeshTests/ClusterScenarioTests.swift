import AgentFlowCore
import AgentFlowMesh
import Foundation
import Synchronization
import Testing

/// Cluster state over the mesh, with real processes: events reach every
/// master, nothing is lost or doubled across cuts and restarts, partial
/// meshes converge through relays, and commands reach any master.
@Suite("Cluster state scenarios (real processes)", .serialized)
struct ClusterScenarioTests {
    static let transports = ["grpc", "tcp"]

    /// Publishes `count` distinct tasks (t-<offset+1>…) on `node`, each a separate event.
    static func publishTasks(_ cluster: ClusterHarness, on node: String, count: Int, offset: Int = 0) async throws {
        for index in 1...count {
            let reply = try await cluster.post(node, "/api/publish/task_status", ["task": "t-\(offset + index)", "state": "running"])
            #expect(reply.status == 202)
        }
    }

    /// Waits until `node`'s view of `origin` holds exactly the tasks t-1…t-`count` and the origin's current sequence.
    static func waitForTasks(_ cluster: ClusterHarness, on node: String, of origin: String, count: Int, timeout: Duration = .seconds(15)) async throws {
        try await eventually("\(node) to hold \(count) tasks of \(origin)", timeout: timeout) {
            guard let seen = try await cluster.view(node).remote(origin) else { return false }
            let names = seen.state.tasks.map(\.task)
            return names.count == count && Set(names) == Set((1...count).map { "t-\($0)" })
        } describe: {
            let seen = try? await cluster.view(node).remote(origin)
            return "\(seen?.state.tasks.count ?? -1) tasks, sequence \(seen?.last_sequence ?? 0)"
        }
    }

    @Test("a change on A is visible on B and C within a second", arguments: transports)
    func propagation(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .staticPeers([]))
        try await cluster.post("m1", "/api/publish/logs", ["task": "backup", "lines": ["line one", "line two"]])
        try await cluster.post("m1", "/api/publish/alert", ["alert_id": "disk-low", "severity": "critical", "summary": "disk almost full"])
        try await cluster.post("m1", "/api/publish/task_status", ["task": "backup", "state": "failed", "exit_code": 3])
        for node in ["m2", "m3"] {
            try await eventually("\(node) to see m1's changes", timeout: .seconds(1), every: .milliseconds(20)) {
                guard let m1 = try await cluster.view(node).remote("m1") else { return false }
                return m1.state.recent_logs.map(\.line).suffix(2) == ["line one", "line two"]
                    && m1.state.alerts.contains { $0.alert_id == "disk-low" }
                    && m1.state.tasks.contains { $0.task == "backup" && $0.state == "failed" }
                    && m1.path == "direct"
            }
        }
        // A host's status reaches the others on its own (monitor.interval 1s).
        let m2 = try await cluster.view("m2")
        #expect(m2.remote("m3") != nil)

        // Bad bodies are refused naming the field.
        let bad = try await cluster.post("m1", "/api/publish/task_status", ["task": "x", "state": "sleeping"])
        #expect(bad.status == 400)
        #expect(((bad.body["error"] as? [String: Any])?["message"] as? String)?.hasPrefix("state: expected one of") == true)
        let unknown = try await cluster.post("m1", "/api/publish/logs", ["task": "x", "lines": ["a"], "colour": "red"])
        #expect(unknown.status == 400)
        #expect(((unknown.body["error"] as? [String: Any])?["message"] as? String)?.hasPrefix("colour: unknown field") == true)
    }

    @Test("a master cut off while A keeps changing converges after it returns: nothing missing, nothing doubled", arguments: transports)
    func lossFreeSync(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        // m1 keeps few events per origin, so a long gap must be filled by a snapshot.
        for node in nodes {
            try cluster.startMaster(node, discovery: .staticPeers(nodes.filter { $0 != node }))
        }
        try await cluster.waitForFullMesh(nodes)
        try await Self.publishTasks(cluster, on: "m1", count: 20)
        try await Self.waitForTasks(cluster, on: "m2", of: "m1", count: 20)

        // Freeze m2 (its links drop after peer_timeout), change m1 a lot, thaw m2.
        let pid = try #require(cluster.process("m2")).processIdentifier
        kill(pid, SIGSTOP)
        try await eventually("m1 to drop m2") { await !cluster.connectedPeers("m1").contains("m2") }
        try await Self.publishTasks(cluster, on: "m1", count: 180, offset: 20)
        try await cluster.post("m1", "/api/publish/logs", ["task": "job", "lines": (1...60).map { "line \($0)" }])
        kill(pid, SIGCONT)
        try await cluster.waitForFullMesh(nodes)
        try await Self.waitForTasks(cluster, on: "m2", of: "m1", count: 200)
        let m2view = try await cluster.view("m2").remote("m1")
        let lines = m2view?.state.recent_logs.filter { $0.task == "job" }.map(\.line) ?? []
        #expect(lines == (11...60).map { "line \($0)" }, "the last 50 lines, in order, none twice")
        // m1 and m3 both hold m1's events; whichever answered m2's sync first filled the gap from its retained log.
        let fromLogs = try await cluster.metric("m1", "agentflow_cluster_sync_sent_total{kind=\"event\"}")
            + cluster.metric("m3", "agentflow_cluster_sync_sent_total{kind=\"event\"}")
        #expect(fromLogs >= 180, "the gap was filled from retained logs")
        let m1sequence = try await cluster.view("m1").local.last_sequence
        #expect((m2view?.last_sequence ?? 0) <= m1sequence && (m2view?.last_sequence ?? 0) >= m1sequence - 3)
    }

    @Test("a gap older than the retained log is filled by a snapshot", arguments: transports)
    func snapshotSync(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2"]
        for node in nodes {
            try cluster.startMaster(node, discovery: .staticPeers(nodes.filter { $0 != node }), retainedEvents: 16)
        }
        try await cluster.waitForFullMesh(nodes)
        // Stop m2 entirely, publish more than m1 retains, start m2 again: m2 starts empty and m1's history is gone.
        cluster.signal("m2", SIGKILL)
        try await Self.publishTasks(cluster, on: "m1", count: 50)
        try cluster.startMaster("m2")
        try await cluster.waitForFullMesh(nodes)
        try await Self.waitForTasks(cluster, on: "m2", of: "m1", count: 50)
        #expect(try await cluster.metric("m1", "agentflow_cluster_sync_sent_total{kind=\"snapshot\"}") >= 1, "m1 could only send a snapshot")
    }

    @Test("a SIGKILLed master restarts as a new incarnation; everyone converges on it and it on them", arguments: transports)
    func restartConverges(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .staticPeers([]))
        try await Self.publishTasks(cluster, on: "m2", count: 5)
        try await Self.waitForTasks(cluster, on: "m1", of: "m2", count: 5)
        let before = try #require(try await cluster.view("m1").remote("m2"))

        cluster.signal("m2", SIGKILL)
        try cluster.startMaster("m2")
        try await cluster.waitForFullMesh(nodes)
        try await Self.publishTasks(cluster, on: "m2", count: 3)
        for node in ["m1", "m3"] {
            try await eventually("\(node) to follow m2's new run") {
                guard let m2 = try await cluster.view(node).remote("m2") else { return false }
                // The old run's tasks went with it: only the new run's three remain.
                return m2.incarnation > before.incarnation && Set(m2.state.tasks.map(\.task)) == ["t-1", "t-2", "t-3"]
            }
        }
        // The restarted master learned the others' state from them.
        try await eventually("m2 to know m1 and m3 again") {
            let view = try await cluster.view("m2")
            return view.remote("m1") != nil && view.remote("m3") != nil
        }
    }

    @Test("masters on different transports: tcp-only and grpc-only link through a master that speaks both, and see each other through it")
    func mixedTransports() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        cluster.nodeTransports = ["m1": ["tcp"], "m2": ["grpc", "tcp"], "m3": ["grpc"]]
        try cluster.startSignal()
        let tasks = "commands:\n  allow: [ping]\n"
        for node in ["m1", "m2", "m3"] { try cluster.startMaster(node, discovery: .signal, extra: tasks) }
        try await eventually("m1–m2 and m2–m3 to link", timeout: .seconds(20)) {
            await cluster.connectedPeers("m2") == ["m1", "m3"]
        }
        // Each link says which transport carries it: m2 prefers grpc, and m1 offers only tcp.
        let m2 = try await cluster.status("m2")
        #expect(m2.local.transports == ["grpc", "tcp"])
        #expect(m2.local.listening.count == 2 && m2.local.advertised.contains { $0.hasPrefix("grpc://") } && m2.local.advertised.contains { $0.hasPrefix("tcp://") })
        #expect(m2.peers.first { $0.nodeID == "m1" }?.transport == "tcp")
        #expect(m2.peers.first { $0.nodeID == "m3" }?.transport == "grpc")
        // m1 and m3 share no transport: never linked, and m1 says why.
        try await eventually("m1 to know m3 and why it cannot dial it") {
            let peer = try await cluster.status("m1").peers.first { $0.nodeID == "m3" }
            return peer?.state != .connected && peer?.lastError?.contains("offers only grpc") == true
        }
        #expect(await cluster.connectedPeers("m1") == ["m2"])
        #expect(await cluster.connectedPeers("m3") == ["m2"])
        // State flows across: m1's log reaches m3 and m3's reaches m1, through m2.
        try await cluster.post("m1", "/api/publish/logs", ["task": "job", "lines": ["from m1"]])
        try await cluster.post("m3", "/api/publish/logs", ["task": "job", "lines": ["from m3"]])
        try await eventually("m3 to see m1's line and m1 to see m3's") {
            let atM3 = try await cluster.view("m3").remote("m1")
            let atM1 = try await cluster.view("m1").remote("m3")
            return atM3?.state.recent_logs.contains { $0.line == "from m1" } == true && atM1?.state.recent_logs.contains { $0.line == "from m3" } == true
        }
        #expect(try await cluster.view("m1").remote("m3")?.path == "via m2")
        let ping = try await cluster.post("m1", "/api/commands", ["target": "m3", "action": "ping"])
        #expect(ping.status == 200 && ping.body["output"] as? String == "pong from m3", "\(ping.body)")
    }

    @Test("the status command answers the target's state as the same snake_case object /api/cluster/status shows")
    func statusCommandShape() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        let allow = "commands:\n  allow: [ping, status]\n"
        try cluster.startMaster("m1", discovery: .staticPeers(["m2"]), extra: allow)
        try cluster.startMaster("m2", discovery: .staticPeers(["m1"]), extra: allow)
        try await cluster.waitForFullMesh(["m1", "m2"])
        try await cluster.post("m2", "/api/publish/logs", ["task": "job", "lines": ["one line"]])
        try await eventually("m2's line to be in its own state") {
            try await cluster.view("m2").local.state?.recent_logs.contains { $0.line == "one line" } == true
        }
        let answer = try await cluster.post("m1", "/api/commands", ["target": "m2", "action": "status"])
        #expect(answer.status == 200, "\(answer.body)")
        let output = try #require(answer.body["output"] as? [String: Any], "output is not a JSON object: \(answer.body)")
        #expect(output["recent_logs"] is [Any] && output["tasks"] is [Any] && output["alerts"] is [Any], "\(output)")
        let logs = output["recent_logs"] as? [[String: Any]] ?? []
        #expect(logs.contains { $0["line"] as? String == "one line" && $0["task"] as? String == "job" && $0["dropped_before"] != nil }, "\(logs)")
        #expect(output["recentLogs"] == nil, "protobuf JSON names leaked: \(output)")
    }

    @Test("events published while the mesh reconfigures (a join and its prunes, a crash, a restart) reach the masters that stay up with p99 under 50 ms")
    func visibilityWhileReconfiguring() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        let all = (1...7).map { "m\($0)" }
        for node in all.prefix(6) {
            try cluster.startMaster(node, discovery: .staticPeers(all.filter { $0 != node }), maxPeers: 2)
        }
        let six = Set(all.prefix(6).compactMap { NodeID($0) })
        try await eventually("the ring of six to form", timeout: .seconds(30)) {
            for node in six {
                let want = Set(MeshTopology.preferredPeers(of: node, among: six, maxPeers: 2).map(\.rawValue))
                if !want.isSubset(of: await cluster.connectedPeers(node.rawValue)) { return false }
            }
            return true
        }
        // Each observer reads m1's last event and how long ago it applied it; the event's
        // own timestamp is m1's publish time (one host, one clock).
        let observers = ["m2", "m3", "m5", "m6"]
        let latencies = LatencyLog()
        let polling = observers.map { observer in
            Task {
                var seen: UInt64 = 0
                while !Task.isCancelled {
                    guard let view = try? await cluster.view(observer) else { continue }
                    let receivedAt = Date()
                    guard let remote = view.remote("m1"), remote.last_sequence > seen, let published = remote.last_event_at.flatMap(Self.instant),
                          let freshness = remote.freshness_ms else { continue }
                    if seen > 0 { latencies.add(receivedAt.timeIntervalSince(published) * 1_000 - Double(freshness), observer: observer) }
                    seen = remote.last_sequence
                }
            }
        }
        defer { for task in polling { task.cancel() } }
        let start = ContinuousClock.now
        var changes: [(at: Duration, what: String)] = [(.seconds(2), "join"), (.seconds(10), "crash"), (.seconds(12), "restart")]
        var index = 0
        while ContinuousClock.now - start < .seconds(18) {
            if let change = changes.first, ContinuousClock.now - start >= change.at {
                changes.removeFirst()
                switch change.what {
                case "join": try cluster.startMaster("m7", discovery: .staticPeers(Array(all.prefix(6))), maxPeers: 2)
                case "crash": cluster.signal("m4", SIGKILL)
                default: try cluster.startMaster("m4")
                }
            }
            try await cluster.post("m1", "/api/publish/logs", ["task": "moving", "lines": ["event \(index)"]])
            index += 1
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .seconds(1))
        for task in polling { task.cancel() }
        let sorted = latencies.all.sorted()
        let p99 = sorted.isEmpty ? .infinity : sorted[Int(Double(sorted.count - 1) * 0.99)]
        #expect(sorted.count > 200, "too few observations: \(sorted.count)")
        #expect(p99 < 50, "visibility p99 \(p99) ms over \(sorted.count) observations; max \(sorted.last ?? 0) ms")
        // Waiting for the periodic sync (state.sync_interval, 1 s here) shows as a delay of hundreds of ms.
        // (Not telling neighbours at once that a link is gone gave p99 41 ms, max 950 ms here; the
        // simulator's 2,000 seeds are the sharper check of the same rules.)
        #expect((sorted.last ?? 0) < 750, "an event took \(sorted.last ?? 0) ms: it waited for a sync")
        print("visibility while reconfiguring: p50 \(sorted.isEmpty ? 0 : sorted[sorted.count / 2]) ms, p99 \(p99) ms, max \(sorted.last ?? 0) ms over \(sorted.count) observations of \(index) events")
    }

    static func instant(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }

    @Test("8 masters with max_peers = 2 converge through relays; commands reach a master with no direct link, and come back", arguments: transports)
    func partialMeshAndCommands(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = (1...8).map { "m\($0)" }
        let tasks = """
            tasks:
              - name: worker
                command: [/bin/sh, -c, "echo worker up; exec sleep 300"]
            commands:
              allow: [ping, task.restart]
            """
        for node in nodes {
            try cluster.startMaster(node, discovery: .staticPeers(node == "m1" ? [] : ["m1"]), maxPeers: 2, extra: tasks)
        }
        try await cluster.waitForPreferredPeers(nodes, maxPeers: 2)
        for node in nodes {
            try await cluster.post(node, "/api/publish/logs", ["task": "hello", "lines": ["hello from \(node)"]])
        }
        for node in nodes {
            try await eventually("\(node) to hold every master's hello", timeout: .seconds(10)) {
                let view = try await cluster.view(node)
                return nodes.filter { $0 != node }.allSatisfy { other in
                    view.remote(other)?.state.recent_logs.contains { $0.line == "hello from \(other)" } == true
                }
            }
        }
        // m5 is across the ring from m1: reached only through relays.
        let m1view = try await cluster.view("m1")
        #expect(m1view.remote("m5")?.path.hasPrefix("via ") == true, "\(m1view.remote("m5")?.path ?? "")")
        let ping = try await cluster.post("m1", "/api/commands", ["target": "m5", "action": "ping"])
        #expect(ping.status == 200 && ping.body["output"] as? String == "pong from m5", "\(ping.body)")
        #expect(ping.body["receipt_ms"] is Double)

        let restart = try await cluster.post("m1", "/api/commands", ["target": "m5", "action": "task.restart", "args": ["task": "worker"]])
        #expect(restart.status == 200 && restart.body["status"] as? String == "ok", "\(restart.body)")
        try await eventually("m1 to see m5's worker restarted") {
            try await cluster.view("m1").remote("m5")?.state.tasks.contains { $0.task == "worker" && $0.state == "running" } == true
        }
        #expect(cluster.log("m5").contains("audit: command"), "the target audits the command")
        var relayed = 0.0
        for node in nodes { relayed += try await cluster.metric(node, "agentflow_cluster_events_total{result=\"relayed\"}") }
        #expect(relayed > 0)

        let refused = try await cluster.post("m1", "/api/commands", ["target": "m5", "action": "task.stop", "args": ["task": "worker"]])
        #expect(refused.status == 403 && (refused.body["error"] as? [String: Any])?["code"] as? String == "refused", "\(refused.body)")
        let unknownAction = try await cluster.post("m1", "/api/commands", ["target": "m5", "action": "reboot"])
        #expect(unknownAction.status == 400 && (unknownAction.body["error"] as? [String: Any])?["code"] as? String == "unknown_action")
        let unknownTarget = try await cluster.post("m1", "/api/commands", ["target": "m99", "action": "ping"])
        #expect(unknownTarget.status == 404 && (unknownTarget.body["error"] as? [String: Any])?["code"] as? String == "unknown_target")
        let badTask = try await cluster.post("m1", "/api/commands", ["target": "m5", "action": "task.restart", "args": ["task": "nope"]])
        #expect(badTask.status == 200 && badTask.body["status"] as? String == "failed")

        // A frozen target answers nothing: the command times out, saying no receipt came.
        let pid = try #require(cluster.process("m5")).processIdentifier
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        let timedOut = try await cluster.post("m1", "/api/commands", ["target": "m5", "action": "ping", "timeout_ms": 500])
        #expect(timedOut.status == 504 && (timedOut.body["error"] as? [String: Any])?["code"] as? String == "timeout", "\(timedOut.body)")
        #expect(((timedOut.body["error"] as? [String: Any])?["message"] as? String)?.contains("no receipt") == true)
    }

    @Test("the local API: a token guards every route but /healthz; malformed, unknown and oversized requests get a clear 4xx")
    func localAPI() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        try cluster.startMaster("m1", discovery: .staticPeers([]), apiToken: "s3cret-token")
        let json = ["Content-Type: application/json"]
        #expect(try await cluster.raw("m1", "GET", "/healthz").status == 200)
        let anonymous = try await cluster.raw("m1", "GET", "/api/cluster/status")
        #expect(anonymous.status == 401 && anonymous.body.contains("unauthorized"))
        let wrong = try await cluster.raw("m1", "POST", "/api/commands", headers: json + ["Authorization: Bearer nope"], body: Array(#"{"target":"m1","action":"ping"}"#.utf8))
        #expect(wrong.status == 401)
        let auth = ["Authorization: Bearer s3cret-token"]
        #expect(try await cluster.raw("m1", "GET", "/api/cluster/status", headers: auth).status == 200)
        let ping = try await cluster.raw("m1", "POST", "/api/commands", headers: json + auth, body: Array(#"{"target":"m1","action":"ping"}"#.utf8))
        #expect(ping.status == 200 && ping.body.contains("pong from m1"))

        let malformed = try await cluster.raw("m1", "POST", "/api/publish/logs", headers: json + auth, body: Array("{not json".utf8))
        #expect(malformed.status == 400 && malformed.body.contains("invalid_json"))
        let notObject = try await cluster.raw("m1", "POST", "/api/publish/alert", headers: json + auth, body: Array("[1,2]".utf8))
        #expect(notObject.status == 400 && notObject.body.contains("must be a JSON object"))
        let wrongType = try await cluster.raw("m1", "POST", "/api/commands", headers: json + auth, body: Array(#"{"target":"m1","action":"ping","timeout_ms":"soon"}"#.utf8))
        #expect(wrongType.status == 400 && wrongType.body.contains("timeout_ms: expected an integer"))
        let huge = try await cluster.raw("m1", "POST", "/api/publish/logs", headers: json + auth, body: Array(repeating: UInt8(ascii: "a"), count: 2 << 20))
        #expect(huge.status == 413)
        let nowhere = try await cluster.raw("m1", "GET", "/api/nothing", headers: auth)
        #expect(nowhere.status == 404 && nowhere.body.contains("not_found"))
        #expect(cluster.isRunning("m1"))
    }
}

/// Latencies gathered by several polling tasks.
final class LatencyLog: Sendable {
    private let values = Mutex<[Double]>([])
    func add(_ value: Double, observer: String) { values.withLock { $0.append(value) } }
    var all: [Double] { values.withLock { $0 } }
}
