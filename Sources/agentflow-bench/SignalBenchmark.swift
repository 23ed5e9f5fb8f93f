import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSTUN
import AgentFlowTLS
import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentflow-bench",
        abstract: "Benchmarks that print their numbers (docs/benchmarks.md).",
        subcommands: [SignalBenchmark.self, LinkBenchmark.self, ClusterBenchmark.self, FootprintBenchmark.self, DashboardBenchmark.self]
    )
}

/// Drives a real signal server process at a real cadence: N nodes register,
/// heartbeat every `interval` (REST or STUN/UDP, spread evenly), and poll
/// `/list?since=` every 30 s each. Prints request rate, latency and the
/// server's CPU and RSS (from /proc), per N and path.
struct SignalBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "signal", abstract: "Load a signal server at a fixed heartbeat cadence.")

    @Option(help: "Node counts to run, comma separated.")
    var nodes: String = "100,1000,10000"

    @Option(help: "Heartbeat paths to run: rest, udp, or both.")
    var paths: String = "rest,udp"

    @Option(help: "Seconds between a node's heartbeats.")
    var interval: Double = 5

    @Option(help: "Seconds between a node's /list delta polls; 0 turns polls off (to isolate the heartbeat path).")
    var pollInterval: Double = 30

    @Option(help: "Poll modes to run: fixed (a conditional /list every poll-interval per node, whatever heartbeats say), on-change (a /list only when a heartbeat answer shows a newer revision, at most every poll-interval: what the signal discovery does), or both.")
    var polls: String = "fixed,on-change"

    @Option(help: "Registry changes per second during a phase (a node re-registers with a new port), to show what polls cost when the registry moves.")
    var churn: Double = 0

    @Option(help: "Seconds to measure each phase.")
    var seconds: Double = 20

    @Option(help: "The agentflow binary that runs the server.")
    var agentflow: String = ".build/release/agentflow"

    @Flag(help: "Also measure the REST heartbeat saturation rate (closed loop, 16 workers, 10 s).")
    var saturate = false

    func run() async throws {
        print("| nodes | heartbeat | polls | churn/s | heartbeats/s | list polls/s | p50 ms | p99 ms | errors | server CPU % of one core | server RSS MiB |")
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        let modes = try polls.split(separator: ",").map { text in
            guard let mode = PollMode(rawValue: String(text)) else { throw ValidationError("--polls: expected fixed, on-change or both, got \(text)") }
            return mode
        }
        for count in nodes.split(separator: ",").compactMap({ Int($0) }) {
            for path in paths.split(separator: ",").map(String.init) {
                for mode in modes {
                    let server = try ServerProcess(binary: agentflow)
                    defer { server.stop() }
                    print(try await phase(count: count, udp: path == "udp", polls: mode, server: server))
                }
            }
        }
        if saturate {
            let server = try ServerProcess(binary: agentflow)
            defer { server.stop() }
            print(try await saturation(server: server))
        }
    }

    /// Registers `count` nodes, then runs heartbeats and polls for `seconds`.
    func phase(count: Int, udp: Bool, polls mode: PollMode, server: ServerProcess) async throws -> String {
        let client = CurlHTTPClient(maxIdleHandles: 16)
        var secrets: [String] = []
        try await withThrowingTaskGroup(of: [String].self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    for index in stride(from: worker, to: count, by: 8) {
                        let response = try await client.request("POST", "\(server.base)/register", headers: ["Content-Type: application/json"], body: Self.registration(index, port: 10_000 + index % 50_000))
                        let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
                        mine.append("\(index)|\(json?["secret"] as? String ?? "")")
                    }
                    return mine
                }
            }
            for try await part in group { secrets += part }
        }
        let byIndex = Dictionary(uniqueKeysWithValues: secrets.map { entry -> (Int, String) in
            let parts = entry.split(separator: "|")
            return (Int(parts[0])!, String(parts[1]))
        })
        // Every node starts with the full list, as after its first poll.
        let first = try await client.request("GET", "\(server.base)/list")
        guard let startRevision = ((try JSONSerialization.jsonObject(with: Data(first.body)) as? [String: Any])?["revision"] as? NSNumber)?.uint64Value else {
            throw ValidationError("GET /list answered without a revision")
        }
        let nodes = NodeTable(count: count, revision: startRevision)

        let udpSender = udp ? try await UDPHeartbeatSender(server: HostPort(host: "127.0.0.1", port: server.stunPort)) : nil
        let passwords = try byIndex.mapValues { try SignalDigest.of($0) }
        let stats = Stats()
        let cpuBefore = server.cpuSeconds()
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .seconds(seconds)
        let heartbeatGap = Duration.seconds(interval / Double(count))
        let pollEvery = Duration.seconds(pollInterval > 0 ? pollInterval : 1e9)
        let pollGap = pollEvery / count
        let churnGap = Duration.seconds(churn > 0 ? 1 / churn : 1e9)

        // One delta poll for node `id`, as the signal discovery sends it.
        @Sendable func poll(_ id: Int) async {
            let known = nodes.revision(of: id)
            let response = try? await client.request("GET", "\(server.base)/list?since=\(known)", headers: ["If-None-Match: \"r\(known)\""])
            if response?.status == 200, let body = response?.body,
               let revision = ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any])?["revision"] as? NSNumber {
                nodes.setRevision(revision.uint64Value, of: id)
            }
            stats.record(latency: nil, ok: response?.status == 200 || response?.status == 304)
        }

        // One scheduler at a fixed rate (not saturation): a heartbeat every
        // interval/N (node after node); in `fixed` mode a conditional poll every
        // poll-interval/N; in `on-change` mode a poll when a heartbeat answer shows
        // a newer revision and the node's last poll is poll-interval old; and
        // `churn` registry changes a second (a node re-registers a new port).
        try await withThrowingTaskGroup(of: Void.self) { group in
            var nextHeartbeat = start
            var nextPoll = mode == .fixed ? start : end
            var nextChurn = churn > 0 ? start + churnGap : end
            var node = 0
            var churned = 0
            while min(nextHeartbeat, nextPoll, nextChurn) < end {
                let due = min(nextHeartbeat, nextPoll, nextChurn)
                try await clock.sleep(until: due)
                if due == nextChurn {
                    let id = (churned * 7_919) % count
                    churned += 1
                    let body = Self.registration(id, port: 20_000 + churned % 40_000, secret: byIndex[id])
                    group.addTask { _ = try? await client.request("POST", "\(server.base)/register", headers: ["Content-Type: application/json"], body: body) }
                    nextChurn = nextChurn + churnGap
                } else if due == nextHeartbeat {
                    let id = node % count
                    let sent = clock.now
                    let answered: @Sendable (RegistryState?, Bool) -> Void = { state, ok in
                        stats.record(latency: clock.now - sent, ok: ok)
                        guard mode == .onChange, let state,
                              nodes.shouldPoll(id, seen: state.revision, now: clock.now, every: max(pollEvery, .seconds(Int(state.minPollIntervalSeconds))))
                        else { return }
                        stats.countPoll()
                        Task { await poll(id) }
                    }
                    if let udpSender {
                        udpSender.send(nodeID: "bench-\(id)", password: passwords[id] ?? "") { answer in
                            answered(answer.flatMap { try? STUNMessage.parse($0) }?.registryState, answer != nil)
                        }
                    } else {
                        let body = Array(#"{"node_id":"bench-\#(id)","secret":"\#(byIndex[id] ?? "")"}"#.utf8)
                        group.addTask {
                            let response = try? await client.request("POST", "\(server.base)/heartbeat", headers: ["Content-Type: application/json"], body: body)
                            let json = response.flatMap { (try? JSONSerialization.jsonObject(with: Data($0.body))) as? [String: Any] }
                            let state = (json?["revision"] as? NSNumber).map {
                                RegistryState(revision: $0.uint64Value, minPollIntervalSeconds: (json?["min_poll_interval_seconds"] as? NSNumber)?.uint32Value ?? 0)
                            }
                            answered(state, response?.status == 200)
                        }
                    }
                    stats.countHeartbeat()
                    node += 1
                    nextHeartbeat = nextHeartbeat + heartbeatGap
                } else {
                    let id = Int(((nextPoll - start) / pollGap).rounded()) % count
                    group.addTask { await poll(id) }
                    stats.countPoll()
                    nextPoll = nextPoll + pollGap
                }
            }
            try await group.waitForAll()
        }
        try await Task.sleep(for: .milliseconds(300))  // let the last UDP answers arrive
        let elapsed = (clock.now - start).seconds
        let cpu = (server.cpuSeconds() - cpuBefore) / elapsed * 100
        let (sorted, errors, heartbeats, polls) = stats.snapshot()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let lost = udpSender.map { $0.outstanding } ?? 0
        return String(
            format: "| %d | %@ | %@ | %.1f | %.0f | %.1f | %.3f | %.3f | %d | %.1f | %.1f |",
            count, udp ? "udp (STUN)" : "rest", mode.rawValue, churn, Double(heartbeats) / elapsed, Double(polls) / elapsed,
            percentile(0.5), percentile(0.99), errors + lost, cpu, server.rssMiB())
    }

    static func registration(_ index: Int, port: Int, secret: String? = nil) -> [UInt8] {
        let secretField = secret.map { #","secret":"\#($0)""# } ?? ""
        return Array(#"{"node_id":"bench-\#(index)","endpoints":[{"transport":"grpc","host":"127.0.0.1","port":\#(port)}]\#(secretField)}"#.utf8)
    }

    /// Closed-loop REST heartbeats from 16 workers for 10 s: the maximum rate.
    func saturation(server: ServerProcess) async throws -> String {
        let client = CurlHTTPClient(maxIdleHandles: 16)
        let response = try await client.request("POST", "\(server.base)/register", body: Array(#"{"node_id":"sat","endpoints":[{"transport":"grpc","host":"h","port":1}]}"#.utf8))
        let secret = (try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])?["secret"] as? String ?? ""
        let body = Array(#"{"node_id":"sat","secret":"\#(secret)"}"#.utf8)
        let done = Stats()
        let cpuBefore = server.cpuSeconds()
        let clock = ContinuousClock()
        let end = clock.now + .seconds(10)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    while clock.now < end {
                        _ = try await client.request("POST", "\(server.base)/heartbeat", body: body)
                        done.countHeartbeat()
                    }
                }
            }
            try await group.waitForAll()
        }
        let cpu = (server.cpuSeconds() - cpuBefore) / 10 * 100
        return String(format: "\nREST heartbeat saturation (16 closed-loop workers, 10 s): %.0f req/s, server CPU %.0f%% of one core", Double(done.snapshot().heartbeats) / 10, cpu)
    }
}

enum PollMode: String, Sendable {
    case fixed
    case onChange = "on-change"
}

/// Each simulated node's last listed revision and last poll, for `on-change` polls.
final class NodeTable: Sendable {
    private struct Entry {
        var revision: UInt64
        var lastPoll: ContinuousClock.Instant?
    }

    private let entries: Mutex<[Entry]>

    init(count: Int, revision: UInt64) {
        entries = Mutex(Array(repeating: Entry(revision: revision, lastPoll: nil), count: count))
    }

    func revision(of id: Int) -> UInt64 { entries.withLock { $0[id].revision } }

    func setRevision(_ revision: UInt64, of id: Int) { entries.withLock { $0[id].revision = max($0[id].revision, revision) } }

    /// True (and the poll is recorded as sent) when `seen` is newer than the node's list and its last poll is `every` old.
    /// A node's first check places its previous fetch at a random point of the last `every`, as in a fleet that
    /// has run for a while (not all of them due at once).
    func shouldPoll(_ id: Int, seen: UInt64, now: ContinuousClock.Instant, every: Duration) -> Bool {
        entries.withLock { entries in
            guard seen > entries[id].revision else { return false }
            let last = entries[id].lastPoll ?? now - every * Double.random(in: 0..<1)
            entries[id].lastPoll = last
            guard now - last >= every else { return false }
            entries[id].lastPoll = now
            return true
        }
    }
}

enum SignalDigest {
    /// The node's STUN password: hex SHA-256 of its secret.
    static func of(_ secret: String) throws -> String {
        try OpenSSLLibrary.sha256(Array(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

extension Duration {
    var seconds: Double { inSeconds }
    var milliseconds: Double { seconds * 1_000 }
}

/// Counters shared by the load tasks.
final class Stats: Sendable {
    private struct Values {
        var latencies: [Double] = []
        var errors = 0
        var heartbeats = 0
        var polls = 0
    }

    private let values = Mutex(Values())

    func record(latency: Duration?, ok: Bool) {
        values.withLock {
            if let latency { $0.latencies.append(latency.milliseconds) }
            if !ok { $0.errors += 1 }
        }
    }

    func countHeartbeat() { values.withLock { $0.heartbeats += 1 } }
    func countPoll() { values.withLock { $0.polls += 1 } }

    func snapshot() -> (latencies: [Double], errors: Int, heartbeats: Int, polls: Int) {
        values.withLock { ($0.latencies.sorted(), $0.errors, $0.heartbeats, $0.polls) }
    }
}
