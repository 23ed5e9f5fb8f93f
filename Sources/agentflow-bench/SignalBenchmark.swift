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
        subcommands: [SignalBenchmark.self, LinkBenchmark.self, ClusterBenchmark.self]
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

    @Option(help: "Seconds to measure each phase.")
    var seconds: Double = 20

    @Option(help: "The agentflow binary that runs the server.")
    var agentflow: String = ".build/release/agentflow"

    @Flag(help: "Also measure the REST heartbeat saturation rate (closed loop, 16 workers, 10 s).")
    var saturate = false

    func run() async throws {
        print("| nodes | path | heartbeats/s | list polls/s | p50 ms | p99 ms | errors | server CPU % of one core | server RSS MiB |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for count in nodes.split(separator: ",").compactMap({ Int($0) }) {
            for path in paths.split(separator: ",").map(String.init) {
                let server = try ServerProcess(binary: agentflow)
                defer { server.stop() }
                let result = try await phase(count: count, udp: path == "udp", server: server)
                print(result)
            }
        }
        if saturate {
            let server = try ServerProcess(binary: agentflow)
            defer { server.stop() }
            print(try await saturation(server: server))
        }
    }

    /// Registers `count` nodes, then runs heartbeats and polls for `seconds`.
    func phase(count: Int, udp: Bool, server: ServerProcess) async throws -> String {
        let client = CurlHTTPClient(maxIdleHandles: 16)
        var secrets: [String] = []
        try await withThrowingTaskGroup(of: [String].self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    for index in stride(from: worker, to: count, by: 8) {
                        let body = #"{"node_id":"bench-\#(index)","endpoints":[{"transport":"grpc","host":"127.0.0.1","port":\#(10_000 + index % 50_000)}]}"#
                        let response = try await client.request("POST", "\(server.base)/register", headers: ["Content-Type: application/json"], body: Array(body.utf8))
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
        let udpSender = udp ? try await UDPHeartbeatSender(server: HostPort(host: "127.0.0.1", port: server.stunPort)) : nil
        let passwords = try byIndex.mapValues { try SignalDigest.of($0) }
        let stats = Stats()
        let cpuBefore = server.cpuSeconds()
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .seconds(seconds)
        let heartbeatGap = Duration.seconds(interval / Double(count))
        let pollGap = Duration.seconds((pollInterval > 0 ? pollInterval : 1e9) / Double(count))

        // One scheduler at a fixed rate (not saturation): a heartbeat every
        // interval/N (node after node) and a delta poll every 30 s/N.
        try await withThrowingTaskGroup(of: Void.self) { group in
            var nextHeartbeat = start
            var nextPoll = start
            var node = 0
            while min(nextHeartbeat, nextPoll) < end {
                if nextHeartbeat <= nextPoll {
                    try await clock.sleep(until: nextHeartbeat)
                    let id = node % count
                    let sent = clock.now
                    if let udpSender {
                        udpSender.send(nodeID: "bench-\(id)", password: passwords[id] ?? "") { ok in
                            stats.record(latency: clock.now - sent, ok: ok)
                        }
                    } else {
                        let body = Array(#"{"node_id":"bench-\#(id)","secret":"\#(byIndex[id] ?? "")"}"#.utf8)
                        group.addTask {
                            let ok = (try? await client.request("POST", "\(server.base)/heartbeat", headers: ["Content-Type: application/json"], body: body).status) == 200
                            stats.record(latency: clock.now - sent, ok: ok)
                        }
                    }
                    stats.countHeartbeat()
                    node += 1
                    nextHeartbeat = nextHeartbeat + heartbeatGap
                } else {
                    try await clock.sleep(until: nextPoll)
                    group.addTask {
                        let status = try? await client.request("GET", "\(server.base)/list?since=\(count)", headers: ["If-None-Match: \"r\(count)\""]).status
                        stats.record(latency: nil, ok: status == 200 || status == 304)
                    }
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
            format: "| %d | %@ | %.0f | %.1f | %.3f | %.3f | %d | %.1f | %.1f |",
            count, udp ? "udp (STUN)" : "rest", Double(heartbeats) / elapsed, Double(polls) / elapsed, percentile(0.5), percentile(0.99),
            errors + lost, cpu, server.rssMiB())
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
