import AgentFlowSimulation
import AgentFlowCluster
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// Runs the mesh core's deterministic simulation: one seed to replay a
/// failure exactly, or many to look for one.
@main
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentflow-sim",
        abstract: "Run the mesh core's deterministic simulation (masters, virtual network, faults, invariants).",
        discussion: """
            With --seed, runs that seed (and prints its steps with --trace): a failure the tests \
            or a soak report replays exactly. With --seeds N, runs N seeds from --first and stops \
            at the first failure.
            """)

    @Option(help: "Run only this seed.")
    var seed: UInt64?

    @Option(help: "How many seeds to run.")
    var seeds: UInt64 = 1_000

    @Option(help: "The first seed of the run.")
    var first: UInt64 = 1

    @Option(help: "Plant a bug on purpose, to see the simulator find it: \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var plant: String?

    @Option(help: "The most masters a seed may pick (3 or more).")
    var largest = 6

    @Option(help: "Run a scripted scenario instead of random faults: crashes40 (40 masters at max_peers 4; 5 crash, then 2 adjacent pairs; crashesN for N masters).")
    var scenario: String?

    @Flag(help: "Print the faults as they happen (with --seed).")
    var trace = false

    func run() throws {
        var bug: PlantedBug?
        if let plant {
            guard let parsed = PlantedBug(rawValue: plant) else {
                throw ValidationError("--plant \(plant): not a planted bug; choose one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            bug = parsed
        }
        var crashNodes = 40
        if let scenario, scenario != "broadcast", scenario != "repair" {
            guard scenario.hasPrefix("crashes"), let nodes = Int(scenario.dropFirst("crashes".count)), nodes >= 20 else {
                throw ValidationError("--scenario \(scenario): not a scenario; choose crashes40 (or crashesN, N ≥ 20 masters), broadcast or repair")
            }
            crashNodes = nodes
        }
        let range = seed.map { $0...$0 } ?? first...(first + max(seeds, 1) - 1)
        var steps = 0
        var worstP99 = 0.0
        var worstSeed: UInt64 = 0
        let clock = ContinuousClock()
        let started = clock.now
        for current in range {
            if seed == nil, current > range.lowerBound, (current - range.lowerBound) % 10_000 == 0 {
                // Progress for long soaks: how far, and the worst so far.
                print("… \(current - range.lowerBound) seeds passed (\(range.lowerBound)…\(current - 1)) in \(clock.now - started); worst visibility p99 \(worstP99.fixed(1)) ms (seed \(worstSeed))")
                fflush(nil)  // readable in a file while the soak runs
            }
            var options = SimulationOptions.varied(seed: current, largest: largest)
            switch scenario {
            case nil: break
            case "broadcast": options = .broadcast(repairs: false)
            case "repair": options = .broadcast(repairs: true)
            default: options = .crashes(nodes: crashNodes)
            }
            options.plantedBug = bug
            let simulation = MeshSimulation(seed: current, options: options)
            if trace && seed != nil { simulation.trace = { print($0) } }
            do {
                let report = try simulation.run()
                steps += report.steps
                if report.visibilityP99 > worstP99 { worstSeed = current }
                worstP99 = max(worstP99, report.visibilityP99)
                if seed != nil {
                    print("seed \(current): \(options.nodes) masters, max_peers \(options.maxPeers): \(report.steps) steps, \(report.published) events, \(report.delivered) applied, visibility p99 \(report.visibilityP99.fixed(1)) ms; \(report.crashes) crashes, \(report.linkCuts) cuts, \(report.partitions) partitions; \(report.stalls) stalls, \(report.silenceCuts) silence cuts; \(report.commandsAnswered)/\(report.commands) commands answered; broadcast: \(report.cluster.relayed) relayed, \(report.cluster.duplicates) duplicates, \(report.cluster.announcements) announcements (\(report.cluster.announcementBytes) B), \(report.cluster.grafts) grafts, \(report.cluster.prunes) prunes; trace \(String(report.trace, radix: 16))")
                }
                if scenario == "broadcast" || scenario == "repair" {
                    let total = report.cluster
                    let stable = total.minus(report.atMark)
                    let sorted = report.visibilityMilliseconds.sorted()
                    print("seed \(current): \(options.nodes) masters, max_peers \(options.maxPeers), \(Int(options.eventsPerSecond * Double(options.nodes))) events/s: whole run: \(total.summary); from 6 s on: \(stable.summary); visibility p50 \(sorted.isEmpty ? 0 : sorted[sorted.count / 2]) ms, p99 \(report.visibilityP99.fixed(1)) ms, max \((sorted.last ?? 0).fixed(1)) ms")
                } else if scenario != nil {
                    let healed = report.healed.map { $0.map { "\($0.components.seconds * 1_000 + $0.components.attoseconds / 1_000_000_000_000_000) ms" } ?? "not within the run" }
                    print("seed \(current): whole again after each crash: \(healed.joined(separator: ", "))")
                }
            } catch let failure as SimulationFailure {
                print("FAILED after \(current - range.lowerBound + 1) seed(s): \(failure)")
                throw ExitCode(1)
            }
        }
        if seed == nil {
            print("\(range.count) seeds passed (\(range.lowerBound)…\(range.upperBound)) in \(clock.now - started), \(steps) steps; worst visibility p99 \(worstP99.fixed(1)) ms (seed \(worstSeed))")
        }
    }
}

extension ClusterNode.Counters {
    func minus(_ earlier: Self) -> Self {
        var result = self
        result.applied -= earlier.applied
        result.duplicates -= earlier.duplicates
        result.relayed -= earlier.relayed
        result.announcementBytes -= earlier.announcementBytes
        result.announcements -= earlier.announcements
        result.grafts -= earlier.grafts
        result.prunes -= earlier.prunes
        return result
    }

    var summary: String {
        let applied = Double(max(applied, 1))
        return "\(self.applied) applied, \((Double(duplicates) / applied).fixed(3)) duplicates and \((Double(relayed) / applied).fixed(2)) relays per applied event, \((Double(announcementBytes) / applied).fixed(1)) announcement bytes per applied event, \(grafts) grafts, \(prunes) prunes"
    }
}

extension Double {
    func fixed(_ digits: Int) -> String {
        let scale = pow10(digits)
        return String(Double((self * scale).rounded()) / scale)
    }

    private func pow10(_ n: Int) -> Double { (0..<n).reduce(1.0) { value, _ in value * 10 } }
}
