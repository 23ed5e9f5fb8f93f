import AgentFlowCluster
import AgentFlowCore
import AgentFlowGRPC
import AgentFlowInMemory
import AgentFlowMesh
import AgentFlowProto
import AgentFlowTCP
import AgentFlowTransportKit
import ArgumentParser
import Foundation
import Logging
import Synchronization

/// Masters in this process on 127.0.0.1 with real transports and mTLS:
/// propagation latency from a publish on n01 to the event applied on each
/// other master (p50/p99), at a fixed event rate, for a direct pair, a fan-out
/// to 10 peers, and 20 masters with max_peers = 3 (by relay hops); command
/// round trips; and the process's CPU while the events flow.
struct ClusterBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster", abstract: "Event propagation and command latency across masters.")

    @Option(help: "Transports to run, comma separated: tcp, grpc.")
    var transports: String = "tcp,grpc"

    @Option(help: "Events per second published on n01.")
    var rate: Int = 1_000

    @Option(help: "Seconds of publishing per scenario.")
    var seconds: Double = 5

    @Option(help: "Command round trips per scenario.")
    var commands: Int = 1_000

    @Option(help: "Scenarios, comma separated: direct (2 masters), fanout (11, full mesh), relay (20, max_peers 3), repair (20, max_peers 3, a link on the tree cut midway), reconfigure (10, max_peers 2, while a master joins and one crashes and restarts).")
    var scenarios: String = "direct,fanout,relay,repair,reconfigure"

    @Option(help: "Hold a 0 µs PM QoS request while measuring (see `link --help`).")
    var holdCPUAwake = true

    func run() async throws {
        let pki = try BenchPKI()
        defer { pki.remove() }
        let qos = holdCPUAwake ? CPUWakeLatencyRequest() : nil
        defer { withExtendedLifetime(qos) {} }
        print("cluster benchmark: masters in one process on 127.0.0.1, mTLS; \(rate) events/s from n01 for \(seconds) s; idle vCPUs: \(qos?.description ?? "as configured")")
        print("| transport | scenario | receivers | hops | events applied | p50 | p99 | max | process CPU | command RTT p50 / p99 |")
        print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
        for transport in transports.split(separator: ",").map(String.init) {
            for scenario in scenarios.split(separator: ",").map(String.init) {
                let (count, maxPeers): (Int, Int) = switch scenario {
                case "direct": (2, 0)
                case "fanout": (11, 0)
                case "relay", "repair": (20, 3)
                case "reconfigure": (10, 2)
                default: throw ValidationError("unknown scenario \(scenario): direct, fanout, relay, repair or reconfigure")
                }
                let cluster = try await BenchCluster(count: count, transport: transport, maxPeers: maxPeers, pki: pki)
                try await cluster.waitForTopology()
                let result = switch scenario {
                case "reconfigure": try await cluster.measureReconfiguring(rate: rate, seconds: max(seconds, 10))
                case "repair": try await cluster.measureRepair(rate: rate, seconds: seconds)
                default: try await cluster.measure(rate: rate, seconds: seconds)
                }
                let farthest = cluster.farthestFromFirst()
                let rtt = try await cluster.commandRoundTrips(to: farthest, count: commands)
                var totals = ClusterNode.Counters()
                var silenceCuts = 0
                for member in cluster.members {
                    let c = member.cluster.counters
                    totals.applied += c.applied
                    totals.relayed += c.relayed
                    totals.skippedFullQueue += c.skippedFullQueue
                    totals.duplicates += c.duplicates
                    totals.gaps += c.gaps
                    totals.syncEventsSent += c.syncEventsSent
                    totals.announcementBytes += c.announcementBytes
                    totals.grafts += c.grafts
                    totals.prunes += c.prunes
                    silenceCuts += member.mesh.failureDetection.silenceCuts
                }
                let applied = Double(max(totals.applied, 1))
                FileHandle.standardError.write(Data(String(format: "  %@/%@: %llu applied; per applied event %.3f relays, %.3f duplicate payloads, %.1f announcement bytes; %llu gaps, %llu grafts, %llu prunes, %llu skipped (full queue), %llu sync events; %d links cut for silence (false suspicions), %d events never arrived%@\n",
                                                        transport, scenario, totals.applied, Double(totals.relayed) / applied, Double(totals.duplicates) / applied, Double(totals.announcementBytes) / applied,
                                                        totals.gaps, totals.grafts, totals.prunes, totals.skippedFullQueue, totals.syncEventsSent, silenceCuts, result.missing, result.note.map { "; \($0)" } ?? "").utf8))
                for row in result.rows {
                    print(String(format: "| %@ | %@ | %d | %@ | %d | %.0f µs | %.0f µs | %.0f µs | %.0f%% | %@ |",
                                 transport, scenario, row.receivers, row.hops, row.count, row.p50, row.p99, row.max, result.cpuPercent,
                                 String(format: "%.0f / %.0f µs (to %@)", rtt.p50, rtt.p99, farthest.rawValue)))
                }
                await cluster.stop()
            }
        }
    }
}

/// N masters in this process, linked through an in-memory directory over a real transport.
final class BenchCluster: Sendable {
    struct Member: Sendable {
        let mesh: MeshNode
        let cluster: ClusterNode
        let router: CommandRouter
        let task: Task<Void, any Error>
    }

    let members: [Member]
    let maxPeers: Int
    let ids: [NodeID]
    let transport: String
    let pki: BenchPKI
    let directory = InMemoryDirectory()
    /// Members started or restarted during a run (the reconfigure scenario).
    let later = Mutex<[Member]>([])

    init(count: Int, transport: String, maxPeers: Int, pki: BenchPKI) async throws {
        self.maxPeers = maxPeers
        self.transport = transport
        self.pki = pki
        ids = (1...count).map { NodeID(String(format: "n%02d", $0))! }
        var members: [Member] = []
        for id in ids { members.append(try Self.member(id, transport: transport, maxPeers: maxPeers, pki: pki, directory: directory)) }
        self.members = members
    }

    /// Starts a master (a new run of `id` if it ran before) and keeps it for `stop()`.
    func startLater(_ id: NodeID) throws -> Member {
        let member = try Self.member(id, transport: transport, maxPeers: maxPeers, pki: pki, directory: directory)
        later.withLock { $0.append(member) }
        return member
    }

    static func member(_ id: NodeID, transport: String, maxPeers: Int, pki: BenchPKI, directory: InMemoryDirectory) throws -> Member {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        do {
            let address = HostPort(host: "127.0.0.1", port: 0)
            let security = try pki.security(id.rawValue)
            let link: any Transport = switch transport {
            case "tcp": try TCPTransport(listenAddress: address, security: security, options: .defaults, logger: logger)
            case "grpc": try GRPCTransport(listenAddress: address, security: security, options: .defaults, logger: logger)
            default: throw ValidationError("unknown transport \(transport): tcp or grpc")
            }
            let identity = LocalIdentity(nodeID: id, displayName: id.rawValue, clusterName: "bench", transport: transport, advertised: [], labels: [:])
            let cluster = ClusterNode(localID: id, incarnation: UInt64(unixMicros()), options: ClusterOptions(syncInterval: .seconds(5)),
                                      commands: .init(allowed: ["ping"], known: ["ping"]), logger: logger) { protocols, effects in
                MeshNode(identity: identity, transport: link, discovery: InMemoryDiscovery(directory: directory),
                         options: MeshOptions(maxPeers: maxPeers),  // the defaults: failure detection as shipped
                         protocols: protocols, effects: effects, logger: logger)
            }
            let mesh = cluster.mesh
            let router = cluster.commands
            let task = Task {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await mesh.run() }
                    group.addTask { await cluster.run(actions: PingOnly(id: id)) }
                }
            }
            return Member(mesh: mesh, cluster: cluster, router: router, task: task)
        }
    }

    /// Waits until every member holds exactly the links the topology wants (surplus
    /// links pruned, so the tree is stable), and a little more for link state to settle.
    func waitForTopology() async throws {
        let all = Set(ids)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            var done = true
            for (index, member) in members.enumerated() {
                // A link is kept while either end prefers it; surplus links are pruned 5 s after they came up.
                let want = MeshTopology.preferredPeers(of: ids[index], among: all, maxPeers: maxPeers)
                    .union(ids.filter { MeshTopology.preferredPeers(of: $0, among: all, maxPeers: maxPeers).contains(ids[index]) })
                let have = Set(member.mesh.links().map(\.peerID))
                if have != want { done = false }
            }
            if done {
                try await Task.sleep(for: .seconds(2))
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw BenchError("the mesh did not form within 60 s")
    }

    struct Row {
        var receivers: Int
        var hops: String
        var count: Int
        var p50: Double
        var p99: Double
        var max: Double
    }

    struct Result {
        var rows: [Row]
        var cpuPercent: Double
        /// (event, observer) pairs that never arrived.
        var missing: Int
        var note: String?
    }

    /// Publishes `rate` events/s on the first member for `seconds`; latency per receiver hop count.
    func measure(rate: Int, seconds: Double) async throws -> Result {
        let (samples, cpu, listeners, published) = try await publish(rate: rate, seconds: seconds, observers: Array(members.dropFirst())) { _, _ in }
        let collected = samples.all
        var rows: [Row] = []
        let everything = collected.values.flatMap { $0 }
        rows.append(Self.row(everything, receivers: members.count - 1, hops: "all"))
        if collected.count > 1 {
            for hops in collected.keys.sorted() {
                rows.append(Self.row(collected[hops]!, receivers: collected[hops]!.count * (members.count - 1) / max(1, everything.count), hops: "\(hops)"))
            }
        }
        return Result(rows: rows, cpuPercent: cpu, missing: published * listeners - everything.count)
    }

    /// As `measure` over 20 masters at max_peers 3, with a link on the origin's tree cut
    /// midway (a reset, as a network fault): how long events published after the cut
    /// take (the repair), and whether any never arrive.
    func measureRepair(rate: Int, seconds: Double) async throws -> Result {
        // n01's tree: its ring neighbours get events first-hand; cut a link one hop further out.
        let victim = members[2]
        let far = victim.mesh.links().map(\.peerID).filter { $0 != ids[0] && !members[0].mesh.links().map(\.peerID).contains($0) }.sorted().first
        var cutAt: Int64?
        let (samples, cpu, listeners, published) = try await publish(rate: rate, seconds: seconds, observers: Array(members.dropFirst())) { elapsed, _ in
            if cutAt == nil, elapsed >= 0.4, let far {
                cutAt = unixMicros()
                victim.mesh.cut(linkTo: far)
                FileHandle.standardError.write(Data("  repair: cut \(victim.cluster.localID)–\(far)\n".utf8))
            }
        }
        let everything = samples.all.values.flatMap { $0 }
        let start = cutAt ?? .max
        let after = samples.timed.filter { sample in sample.published >= start && sample.published < start &+ 1_000_000 }.map(\.latency)
        var rows = [Self.row(everything, receivers: listeners, hops: "all, with a cut")]
        rows.append(Self.row(after, receivers: listeners, hops: "published ≤ 1 s after the cut"))
        return Result(rows: rows, cpuPercent: cpu, missing: published * listeners - everything.count,
                      note: "cut \(victim.cluster.localID)–\(far?.rawValue ?? "none"): slowest event after it \(String(format: "%.1f", (after.max() ?? 0) / 1_000)) ms")
    }

    /// The publishing run both measurements share: `observers` record each event's
    /// latency by relay hops; `step` runs before each publish with the fraction of the
    /// run done and the time since its start. Returns the samples, the process CPU and
    /// how many observers there were.
    func publish(rate: Int, seconds: Double, observers: [Member],
                 step: (Double, Duration) throws -> Void) async throws -> (LatencySamples, Double, Int, Int) {
        let samples = LatencySamples()
        let origin = ids[0].rawValue
        var listeners: [Task<Void, Never>] = []
        for member in observers {
            let updates = member.cluster.updates()
            listeners.append(Task {
                for await update in updates {
                    guard case .event(let event) = update, case .taskLog(let line) = event, line.header.origin == origin, line.task == "bench" else { continue }
                    let latency = Double(unixMicros() - line.header.timestampUnixMicros)
                    samples.add(latency, hops: 16 - line.header.hopLimit + 1, published: line.header.timestampUnixMicros)
                }
            })
        }
        try await Task.sleep(for: .milliseconds(200))
        let publisher = members[0].cluster
        let total = Int(Double(rate) * seconds)
        let interval = Duration.seconds(1) / rate
        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        var next = start
        var line = Agentflow_Mesh_V1_TaskLog()
        line.task = "bench"
        line.text = String(repeating: "x", count: 100)
        for index in 0..<total {
            try step(Double(index) / Double(max(total, 1)), ContinuousClock.now - start)
            if next > ContinuousClock.now { try await Task.sleep(until: next, clock: .continuous) }
            publisher.publish(.taskLog(line))
            next += interval
        }
        let wall = ContinuousClock.now - start
        try await Task.sleep(for: .seconds(1))  // let the last events land
        let cpu = (Self.cpuSeconds() - cpuStart) / ((wall + .seconds(1)).seconds) * 100
        for listener in listeners { listener.cancel() }
        return (samples, cpu, listeners.count, total)
    }

    /// Publishes on the first member while the mesh changes under it: a new master
    /// joins (its links come up, and surplus links are pruned 5 s later), a master is
    /// cut off abruptly (its links reset) and comes back as a new run. Latency is
    /// measured at the members that stay up throughout.
    func measureReconfiguring(rate: Int, seconds: Double) async throws -> Result {
        let victim = members[members.count / 2]
        var changes: [(at: Double, what: String)] = [(0.1, "join"), (0.45, "crash"), (0.6, "restart")]
        let (samples, cpu, listeners, _) = try await publish(rate: rate, seconds: seconds, observers: members.dropFirst().filter { $0.cluster.localID != victim.cluster.localID }) { elapsed, since in
            while let change = changes.first, elapsed >= change.at {
                changes.removeFirst()
                switch change.what {
                case "join": _ = try self.startLater(NodeID(String(format: "n%02d", self.ids.count + 1))!)
                case "crash": victim.task.cancel()
                default: _ = try self.startLater(victim.cluster.localID)
                }
                FileHandle.standardError.write(Data("  reconfigure: \(change.what) at \(String(format: "%.1f", since.seconds)) s\n".utf8))
            }
        }
        let everything = samples.all.values.flatMap { $0 }
        // Observers that were linked throughout may still miss nothing; the count is for the record.
        return Result(rows: [Self.row(everything, receivers: listeners, hops: "all, reconfiguring")], cpuPercent: cpu, missing: 0)
    }

    static func row(_ values: [Double], receivers: Int, hops: String) -> Row {
        let sorted = values.sorted()
        func at(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return Row(receivers: receivers, hops: hops, count: sorted.count, p50: at(0.5), p99: at(0.99), max: sorted.last ?? .nan)
    }

    /// The member farthest from the first on the ring (the first's neighbour in a full mesh).
    func farthestFromFirst() -> NodeID {
        maxPeers == 0 ? ids[1] : ids[ids.count / 2]
    }

    func commandRoundTrips(to target: NodeID, count: Int) async throws -> (p50: Double, p99: Double) {
        let router = members[0].router
        var samples: [Double] = []
        for index in 0..<(count + 100) {
            let start = ContinuousClock.now
            let outcome = await router.execute(target: target, action: "ping", args: [:], timeout: .seconds(5))
            guard case .answered(let result, _, _, _) = outcome, result.status == .ok else {
                throw BenchError("ping \(index) to \(target) failed: \(outcome)")
            }
            if index >= 100 { samples.append((ContinuousClock.now - start).seconds * 1_000_000) }
        }
        samples.sort()
        return (samples[samples.count / 2], samples[samples.count * 99 / 100])
    }

    func stop() async {
        let all = members + later.withLock { $0 }
        for member in all { member.mesh.shutdown() }
        for member in all {
            member.task.cancel()
            _ = try? await member.task.value
        }
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}

/// The benchmark's targets answer `ping` only.
struct PingOnly: CommandActions {
    let id: NodeID
    var knownActions: Set<String> { ["ping"] }
    func perform(_ action: String, args: [String: String]) async -> CommandRouter.Result {
        .init(status: .ok, output: "pong from \(id)")
    }
}

/// Latencies by relay hops, gathered from many listener tasks.
final class LatencySamples: Sendable {
    private let values = Mutex<[UInt32: [Double]]>([:])
    private let stamped = Mutex<[(published: Int64, latency: Double)]>([])
    func add(_ latency: Double, hops: UInt32, published: Int64) {
        values.withLock { $0[hops, default: []].append(latency) }
        stamped.withLock { $0.append((published, latency)) }
    }
    var all: [UInt32: [Double]] { values.withLock { $0 } }
    var timed: [(published: Int64, latency: Double)] { stamped.withLock { $0 } }
}
