import AgentFlowCore
public import AgentFlowCluster
public import AgentFlowMesh
import AgentFlowProto

/// What a simulation runs: how many masters, the topology, how long, and
/// which faults it injects.
public struct SimulationOptions: Sendable {
    public var nodes: Int
    /// 0: full mesh.
    public var maxPeers: Int
    /// Virtual time with faults, then `quiet` without, then the final checks.
    public var chaos: Duration
    /// The bound every live member must meet after the last fault: linked to its ring
    /// neighbours, the graph connected, the status and cluster views right.
    public var quiet: Duration
    /// Events a second each live node publishes (on average).
    public var eventsPerSecond: Double
    /// A bug planted on purpose, to show the simulator finds it.
    public var plantedBug: PlantedBug?
    /// The most masters `varied` could have picked (for the replay line).
    public var largest = 6
    /// Crashes at fixed times instead of random faults (none: random faults through `chaos`).
    public var scriptedCrashes: [ScriptedCrash] = []
    /// Link cuts at fixed times (a random open link each) instead of random faults.
    public var scriptedCuts: [Duration] = []
    /// Masters that start late (by position in ring order), joining a running mesh.
    public var lateStarts: [Int: Duration] = [:]
    /// Counters are read at this time too (`SimulationReport.atMark`), to tell a stable window apart.
    public var mark: Duration?

    /// True when faults come only from the script.
    var isScripted: Bool { !scriptedCrashes.isEmpty || !scriptedCuts.isEmpty || !lateStarts.isEmpty }

    public init(nodes: Int = 6, maxPeers: Int = 2, chaos: Duration = .seconds(4), quiet: Duration = .seconds(8),
                eventsPerSecond: Double = 1, plantedBug: PlantedBug? = nil) {
        self.nodes = nodes
        self.maxPeers = maxPeers
        self.chaos = chaos
        self.quiet = quiet
        self.eventsPerSecond = eventsPerSecond
        self.plantedBug = plantedBug
    }

    /// The options a seed picks for itself: 3 to `largest` masters, full or partial mesh.
    public static func varied(seed: UInt64, largest: Int = 6) -> SimulationOptions {
        var random = SplitMix64(seed: seed ^ 0xA5A5_5A5A_C3C3_3C3C)
        let nodes = Int.random(in: 3...max(3, largest), using: &random)
        let maxPeers = [0, 1, 2, 2, 3].randomElement(using: &random)!
        var options = SimulationOptions(nodes: nodes, maxPeers: min(maxPeers, nodes - 1))
        options.largest = largest
        return options
    }
}

extension SimulationOptions {
    /// Broadcast at a steady rate over a partial mesh (20 masters at `max_peers 3` by
    /// default) for 12 s. The counters from `mark` (6 s) on show the tree once the
    /// mesh has formed. With `repairs`, the tree is changed under the burst: a master
    /// joins at 7 s, and links are cut at 8 s and 9 s.
    public static func broadcast(nodes: Int = 20, maxPeers: Int = 3, eventsPerSecond: Double = 10, repairs: Bool) -> SimulationOptions {
        var options = SimulationOptions(nodes: nodes, maxPeers: maxPeers, chaos: .seconds(10), quiet: .seconds(6), eventsPerSecond: eventsPerSecond)
        options.largest = nodes
        // The first links are pruned to the ring 5 s after they came up (the prune delay): the tree is stable after that.
        options.mark = .seconds(6)
        if repairs {
            options.lateStarts = [nodes / 2: .seconds(7)]
            options.scriptedCuts = [.seconds(8), .seconds(9)]
        } else {
            // A mesh with no faults at all still needs a script, so no random fault is drawn.
            options.lateStarts = [0: .zero]
        }
        return options
    }
}

/// Masters that crash silently together at a fixed time (no restart): the
/// survivors must notice, re-plan and be whole again within a bound.
public struct ScriptedCrash: Sendable {
    public var at: Duration
    /// Positions in ring order (node ids sorted), so "adjacent" means ring neighbours.
    public var positions: [Int]

    public init(at: Duration, positions: [Int]) {
        self.at = at
        self.positions = positions
    }
}

extension SimulationOptions {
    /// The partial mesh an operator tried by hand (issue 13), at `nodes` masters (40 there)
    /// and `max_peers 4`: five crash silently (three of them around one master, which
    /// loses every ring neighbour), then two adjacent pairs more. Nobody restarts.
    public static func crashes(nodes: Int = 40) -> SimulationOptions {
        precondition(nodes >= 20, "the crash scenario needs 20 masters or more")
        var options = SimulationOptions(nodes: nodes, maxPeers: 4, chaos: .seconds(16), quiet: .seconds(8), eventsPerSecond: 0.5)
        let at = { (fraction: Double) in Int(Double(nodes) * fraction) }
        options.scriptedCrashes = [
            ScriptedCrash(at: .seconds(3), positions: [3, at(0.4), at(0.4) + 1, at(0.4) + 3, at(0.75)]),
            ScriptedCrash(at: .seconds(10), positions: [max(5, at(0.15)), max(5, at(0.15)) + 1, at(0.65), at(0.65) + 1]),
        ]
        options.largest = nodes
        return options
    }
}

/// Bugs the simulator can plant in the real code paths it drives.
public enum PlantedBug: String, Sendable, CaseIterable {
    /// The cluster store applies an event that skips ahead (no gap check).
    case gapCheck = "gap-check"
    /// Failure detection counts this node's own stall as its peers' silence (no Lifeguard).
    case stallBlind = "stall-blind"
}

/// An invariant that broke: which, when, and the seed that replays it.
public struct SimulationFailure: Error, Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var step: Int
    public var time: MeshInstant
    public var invariant: String
    public var detail: String
    public var plantedBug: PlantedBug?
    /// The most masters the seed could pick (`SimulationOptions.varied(seed:largest:)`).
    public var largest: Int

    public var description: String {
        "seed \(seed), step \(step) at \(time): \(invariant): \(detail)\nreplay: agentflow-sim --seed \(seed) --largest \(largest)\(plantedBug.map { " --plant \($0.rawValue)" } ?? "") --trace"
    }
}

/// What a run did, for the report and for replay checks.
public struct SimulationReport: Sendable {
    public var seed: UInt64
    public var options: SimulationOptions
    public var steps = 0
    public var published = 0
    public var delivered = 0
    public var crashes = 0
    public var restarts = 0
    public var linkCuts = 0
    public var partitions = 0
    public var commands = 0
    public var commandsAnswered = 0
    /// For each scripted crash: virtual time until every survivor was at its target degree
    /// and saw exactly the live masters as reachable (nil: not within the run).
    public var healed: [Duration?] = []
    /// Events forwarded by relays, summed over the live masters at the end.
    public var relayed: UInt64 = 0
    /// The cluster protocol's counters, summed over the live masters at the end
    /// (applied events, duplicates, announcements, grafts, prunes).
    public var cluster = ClusterNode.Counters()
    /// Stalls injected: a master starved (no CPU) for 0.3–6 s, then running again.
    public var stalls = 0
    /// Links cut because their peer went silent (each checked to be a real silence).
    public var silenceCuts = 0
    /// The summed counters at `SimulationOptions.mark` (subtract them for a stable window).
    public var atMark = ClusterNode.Counters()
    /// Virtual milliseconds from publish to apply, for every (event, live observer) pair.
    public var visibilityMilliseconds: [Double] = []
    /// A digest of everything that happened: equal for equal seeds.
    public var trace: UInt64 = 0xCBF2_9CE4_8422_2325

    public var visibilityP99: Double {
        guard !visibilityMilliseconds.isEmpty else { return 0 }
        let sorted = visibilityMilliseconds.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
    }
}

/// A deterministic simulation of N masters: their real `MeshState`s (with the
/// real cluster and command protocols) driven over a virtual network by a
/// virtual clock and a seeded generator, with faults — message delay, link
/// cuts, partitions and healing, crashes and restarts (state lost but the peer
/// book, a new incarnation), clock skew, discovery flapping — and invariants
/// checked after every step. One process, no sockets, no sleeping: a seed
/// replays exactly.
public final class MeshSimulation {
    struct Node {
        var id: NodeID
        var state: MeshState?
        var incarnation: UInt64 = 1
        var skewMicros: Int64
        /// The peer book as last written (what survives a crash).
        var savedBook: PeerBook
        var tickAt: MeshInstant?
        var discoveryDown = false
        /// Per origin: (incarnation, last sequence) as delivered to this node's subscribers.
        var applied: [String: (UInt64, UInt64)] = [:]
        var nextLinkID: UInt64 = 1
        var crashedAt: MeshInstant?
        var startedAt = MeshInstant.zero
        /// A stall: the process runs nothing until then (starved, stopped); what comes meanwhile waits.
        var stalledUntil: MeshInstant?
        var deferred: [Deferred] = []
        /// The end of this node's last stall: before it, silence from it is real.
        var stallEnded = MeshInstant.zero
    }

    /// What reached a stalled node, replayed in order when it runs again.
    enum Deferred {
        case event(Event)
        case input(MeshInput)
    }

    /// One direction of a link: where it lands and when its last message arrives (FIFO).
    struct Half {
        var node: Int
        var link: LinkID
        var lastArrival: MeshInstant = .zero
    }

    struct Wire {
        var a: Half
        var b: Half
        var open = true
    }

    enum Event {
        case tick(Int)
        case arrive(wire: Int, toB: Bool, Envelope)
        case ended(node: Int, link: LinkID, error: String?)
        case connect(from: Int, plan: DialPlan)
        case discovery(Int, UInt64)
        case publish(Int, UInt64)
        case command(Int, UInt64)
        case closeWire(Int)
        case commandDone(node: Int, incarnation: UInt64, commandID: String, result: CommandRouter.Result)
        case fault
        case scripted(Int)
        case checkHealed(Int)
        case heal
        case restart(Int)
        case resume(Int)
        case lateStart(Int)
        case scriptedCut
        case mark
    }

    /// A heap entry: small, so the heap moves little; the event waits in `pendingEvents`.
    struct Scheduled: Comparable {
        var at: Int64
        var order: UInt64
        static func < (a: Scheduled, b: Scheduled) -> Bool { a.at < b.at || (a.at == b.at && a.order < b.order) }
    }

    public let seed: UInt64
    public let options: SimulationOptions
    let meshOptions: MeshOptions
    let clusterOptions: ClusterOptions
    var random: SplitMix64
    var now = MeshInstant.zero
    var queue = Heap<Scheduled>()
    var pendingEvents: [UInt64: Event] = [:]
    var order: UInt64 = 0
    var nodes: [Node] = []
    /// Which nodes run (a crashed one does not): read on every step, so kept apart from `nodes`.
    var running: [Bool] = []
    var wires: [Wire] = []
    /// Open wires by (node, link id at that node).
    var wireOf: [Int: [LinkID: (Int, Bool)]] = [:]
    /// Node groups that cannot talk (a partition); nil when whole.
    var partition: Set<Int>?
    /// When the partition heals: what crosses it waits until then, as TCP retransmits would.
    var partitionEnds = MeshInstant.zero
    /// When the last partition healed: what it held arrives only then.
    var lastHeal = MeshInstant.zero
    var report: SimulationReport
    /// When each (origin, incarnation, sequence) was published, and which masters were
    /// in the mesh then (linked to someone): visibility is measured for those.
    var publishedAt: [String: (at: MeshInstant, inMesh: Set<Int>)] = [:]
    /// Partitions, and silent crashes until their peers' timeout: visibility is not
    /// measured across them (cuts, prunes, joins and reset crashes must not delay events).
    var disruptions: [(from: MeshInstant, to: MeshInstant)] = []
    /// Command ids run, per (node, incarnation).
    var executed: Set<String> = []
    var failure: SimulationFailure?
    let chaosEnds: MeshInstant
    let runEnds: MeshInstant
    /// Set to print every step.
    public var trace: ((String) -> Void)?

    public init(seed: UInt64, options: SimulationOptions) {
        self.seed = seed
        self.options = options
        random = SplitMix64(seed: seed)
        report = SimulationReport(seed: seed, options: options)
        meshOptions = MeshOptions(maxPeers: options.maxPeers, handshakeTimeout: .seconds(1), pingInterval: .milliseconds(1_500),
                                  peerTimeout: .seconds(4), backoff: ReconnectBackoff(base: .milliseconds(100), maximum: .seconds(1)),
                                  peerExchangeInterval: .seconds(5), peerBookFile: "sim", closeGrace: .milliseconds(500))
        clusterOptions = ClusterOptions(retainedEvents: 64, syncInterval: .seconds(3), hopLimit: 16, recentLogLines: 5)
        chaosEnds = MeshInstant.zero + options.chaos
        runEnds = chaosEnds + options.quiet
        for index in 0..<options.nodes {
            let skew = Int64.random(in: -5_000_000...5_000_000, using: &random)
            nodes.append(Node(id: Self.name(index), skewMicros: skew, savedBook: PeerBook(file: "sim", maxAge: .seconds(3_600))))
            running.append(false)
        }
    }

    static func name(_ index: Int) -> NodeID { NodeID("n\(index)")! }

    // MARK: Running

    /// Runs to the end; throws the first invariant that breaks.
    @discardableResult
    public func run() throws -> SimulationReport {
        let ring = nodes.indices.sorted { nodes[$0].id < nodes[$1].id }
        let late = Dictionary(uniqueKeysWithValues: options.lateStarts.compactMap { position, at in position < ring.count ? (ring[position], at) : nil })
        for index in nodes.indices {
            let jitter = Duration.milliseconds(Int64.random(in: 0...300, using: &random))
            if let at = late[index], at > .zero {
                schedule(.lateStart(index), after: at)
            } else {
                start(index, at: jitter)
            }
        }
        if let mark = options.mark { schedule(.mark, after: mark) }
        for at in options.scriptedCuts { schedule(.scriptedCut, after: at) }
        if options.isScripted {
            for (number, crash) in options.scriptedCrashes.enumerated() { schedule(.scripted(number), after: crash.at) }
            report.healed = Array(repeating: nil, count: options.scriptedCrashes.count)
        } else if options.chaos > .zero {
            schedule(.fault, after: .milliseconds(Int64.random(in: 300...1_500, using: &random)))
        }
        while let next = queue.popMin() {
            guard let event = pendingEvents.removeValue(forKey: next.order) else { continue }
            if next.at > runEnds.nanoseconds { break }
            now = MeshInstant(nanoseconds: next.at)
            report.steps += 1
            mix(UInt64(bitPattern: now.nanoseconds))
            handle(event)
            if let failure { throw failure }
        }
        now = runEnds
        report.cluster = summedCounters()
        report.relayed = report.cluster.relayed
        try finalChecks()
        return report
    }

    /// The cluster protocol's counters, summed over the running masters.
    func summedCounters() -> ClusterNode.Counters {
        var sum = ClusterNode.Counters()
        for counters in nodes.compactMap({ $0.state?.read(ClusterProtocol.self) { $0.counters } }) {
            sum.applied += counters.applied
            sum.published += counters.published
            sum.duplicates += counters.duplicates
            sum.relayed += counters.relayed
            sum.gaps += counters.gaps
            sum.announcements += counters.announcements
            sum.announcedOrigins += counters.announcedOrigins
            sum.announcementBytes += counters.announcementBytes
            sum.grafts += counters.grafts
            sum.prunes += counters.prunes
            sum.syncEventsSent += counters.syncEventsSent
        }
        return sum
    }

    func schedule(_ event: Event, after delay: Duration) {
        schedule(event, at: now + delay)
    }

    func schedule(_ event: Event, at instant: MeshInstant) {
        order += 1
        pendingEvents[order] = event
        queue.insert(Scheduled(at: max(instant, now).nanoseconds, order: order))
    }

    func mix(_ value: UInt64) {
        report.trace = (report.trace ^ value) &* 0x0000_0100_0000_01B3
    }

    func fail(_ invariant: String, _ detail: String) {
        guard failure == nil else { return }
        failure = SimulationFailure(seed: seed, step: report.steps, time: now, invariant: invariant, detail: detail,
                                    plantedBug: options.plantedBug, largest: options.largest)
    }

    func clock(_ index: Int) -> MeshNow {
        MeshNow(instant: now, wallMicros: 1_800_000_000_000_000 + now.nanoseconds / 1_000 + nodes[index].skewMicros)
    }

    func start(_ index: Int, at delay: Duration) {
        let id = nodes[index].id
        let identity = LocalIdentity(nodeID: id, displayName: id.rawValue, clusterName: "sim", incarnation: nodes[index].incarnation,
                                     transport: "sim", advertised: [], labels: [:])
        var cluster = ClusterProtocol(localID: id, incarnation: nodes[index].incarnation, options: clusterOptions)
        if options.plantedBug == .gapCheck { cluster.plantGapBug() }
        let protocols: [any MeshProtocol] = [
            cluster,
            CommandProtocol(localID: id, allowed: ["ping"], knownActions: ["ping"], hopLimit: 16),
        ]
        var state = MeshState(identity: identity, options: meshOptions, book: nodes[index].savedBook, protocols: protocols,
                              seed: random.next(), now: clock(index))
        if options.plantedBug == .stallBlind { state.plantStallBlindness() }
        nodes[index].applied = [:]
        nodes[index].tickAt = nil
        nodes[index].startedAt = now
        nodes[index].discoveryDown = false
        let actions = state.handle(.started(advertised: [endpoint(index)]), at: clock(index))
        nodes[index].state = state
        running[index] = true
        perform(actions, at: index)
        let run = nodes[index].incarnation
        schedule(.discovery(index, run), after: delay)
        schedule(.publish(index, run), after: delay + .milliseconds(200))
        schedule(.command(index, run), after: delay + .seconds(1))
    }

    func endpoint(_ index: Int) -> DiscoveredEndpoint {
        DiscoveredEndpoint(transport: "sim", address: HostPort(host: "n\(index)", port: 7000))
    }

    var inChaos: Bool { now < chaosEnds }

    func alive(_ index: Int) -> Bool { running[index] }

    func canTalk(_ a: Int, _ b: Int) -> Bool {
        guard let partition else { return true }
        return partition.contains(a) == partition.contains(b)
    }

    func delay() -> Duration { .microseconds(Int64.random(in: 200...8_000, using: &random)) }

    // MARK: Events

    /// The node an event happens at, if it is one node's.
    func target(of event: Event) -> Int? {
        switch event {
        case .tick(let index), .discovery(let index, _), .publish(let index, _), .command(let index, _): index
        case .arrive(let wire, let toB, _): toB ? wires[wire].b.node : wires[wire].a.node
        case .ended(let index, _, _), .commandDone(let index, _, _, _): index
        case .connect(let from, _): from
        default: nil
        }
    }

    func handle(_ event: Event) {
        if let index = target(of: event), nodes[index].stalledUntil != nil {
            nodes[index].deferred.append(.event(event))
            return
        }
        switch event {
        case .tick(let index):
            guard alive(index), let due = nodes[index].tickAt, due <= now else { return }
            nodes[index].tickAt = nil
            feed(index, .tick)
        case .arrive(let wireIndex, let toB, let envelope):
            let wire = wires[wireIndex]
            let half = toB ? wire.b : wire.a
            guard wire.open, alive(half.node) else { return }
            mix(UInt64(wireIndex))
            feed(half.node, .envelope(envelope, from: half.link))
        case .ended(let index, let link, let error):
            guard alive(index) else { return }
            feed(index, .linkDown(link, error: error))
        case .connect(let from, let plan):
            connect(from, plan)
        case .discovery(let index, let run):
            guard alive(index), nodes[index].incarnation == run else { return }
            discover(index)
            schedule(.discovery(index, run), after: .milliseconds(Int64.random(in: 1_600...2_400, using: &random)))
        case .publish(let index, let run):
            // Publishing stops shortly before the end, so the last events have landed when the views are compared.
            guard alive(index), nodes[index].incarnation == run, now + clusterOptions.syncInterval + .seconds(1) < runEnds else { return }
            publish(index)
            let mean = 1.0 / max(options.eventsPerSecond, 0.01)
            schedule(.publish(index, run), after: .milliseconds(Int64(Double.random(in: 0...(2 * mean), using: &random) * 1_000)))
        case .command(let index, let run):
            guard alive(index), nodes[index].incarnation == run else { return }
            issueCommand(index)
            schedule(.command(index, run), after: .milliseconds(Int64.random(in: 500...2_000, using: &random)))
        case .closeWire(let position):
            wires[position].open = false
        case .commandDone(let index, let incarnation, let commandID, let result):
            guard alive(index), nodes[index].incarnation == incarnation else { return }
            withCommands(index) { $0.finished(commandID, result: result, context: &$1) }
        case .fault:
            guard inChaos else { return }
            injectFault()
            schedule(.fault, after: .milliseconds(Int64.random(in: 300...1_500, using: &random)))
        case .scripted(let number):
            let ring = nodes.indices.sorted { nodes[$0].id < nodes[$1].id }
            for position in options.scriptedCrashes[number].positions where position < ring.count && alive(ring[position]) {
                crash(ring[position], silent: true)
            }
            schedule(.checkHealed(number), after: .milliseconds(100))
        case .checkHealed(let number):
            guard report.healed[number] == nil else { return }
            if violations().isEmpty {
                report.healed[number] = now - (MeshInstant.zero + options.scriptedCrashes[number].at)
                trace?("\(now) whole again, \(report.healed[number]!) after crash \(number + 1)")
            } else {
                schedule(.checkHealed(number), after: .milliseconds(100))
            }
        case .heal:
            partition = nil
            lastHeal = now
            trace?("\(now) partition healed")
        case .lateStart(let index):
            trace?("\(now) \(nodes[index].id) starts and joins")
            start(index, at: .milliseconds(1))
        case .scriptedCut:
            cutRandomLink()
        case .mark:
            report.atMark = summedCounters()
        case .resume(let index):
            guard nodes[index].stalledUntil != nil else { return }
            nodes[index].stalledUntil = nil
            nodes[index].stallEnded = now
            trace?("\(now) \(nodes[index].id) runs again")
            // Its timer fires first, before it reads what queued up: the case Lifeguard guards against.
            if nodes[index].tickAt != nil { feed(index, .tick) }
            let queued = nodes[index].deferred
            nodes[index].deferred = []
            for item in queued {
                switch item {
                case .event(let event): handle(event)
                case .input(let input): feed(index, input)
                }
            }
        case .restart(let index):
            guard !alive(index) else { return }
            nodes[index].incarnation += 1
            report.restarts += 1
            trace?("\(now) \(nodes[index].id) restarts as incarnation \(nodes[index].incarnation)")
            start(index, at: .milliseconds(10))
        }
    }

    // The states are changed in place: a copy would copy every table on its first change.
    func feed(_ index: Int, _ input: MeshInput) {
        guard running[index] else { return }
        if nodes[index].stalledUntil != nil {
            nodes[index].deferred.append(.input(input))
            return
        }
        let actions = nodes[index].state!.handle(input, at: clock(index))
        perform(actions, at: index)
    }

    func withCommands<R>(_ index: Int, _ body: (inout CommandProtocol, inout MeshContext) -> R) -> R? {
        guard nodes[index].state != nil, let (result, actions) = nodes[index].state!.withProtocol(CommandProtocol.self, at: clock(index), body) else { return nil }
        perform(actions, at: index)
        return result
    }

    func perform(_ actions: [MeshAction], at index: Int) {
        for action in actions {
            guard alive(index) else { return }
            switch action {
            case .dial(let plan):
                schedule(.connect(from: index, plan: plan), after: delay())
            case .accept, .refuse:
                break  // settled inside `connect`
            case .send(let link, let envelope), .sendInOrder(let link, let envelope):
                transmit(envelope, from: index, on: link)
            case .close(let link, let reason):
                var goodbye = Envelope()
                goodbye.goodbye.reason = reason
                transmit(goodbye, from: index, on: link)
                endWire(of: index, link: link, clean: true)
            case .abort(let link, let reason):
                if reason.hasPrefix("nothing from") { checkSilence(cutBy: index, link: link, reason: reason) }
                endWire(of: index, link: link, clean: false, reason: reason)
            case .persist(let book):
                nodes[index].savedBook = book
            case .log(_, let message):
                trace?("\(now) \(nodes[index].id): \(message)")
            case .effect(let value):
                effect(value, at: index)
            }
        }
        if let deadline = nodes[index].state?.nextDeadline, nodes[index].tickAt.map({ deadline < $0 }) ?? true {
            nodes[index].tickAt = deadline
            schedule(.tick(index), at: deadline)
        }
    }

    func wireIndex(of index: Int, link: LinkID) -> (Int, Bool)? {
        guard let found = wireOf[index]?[link], wires[found.0].open else { return nil }
        return found
    }

    func transmit(_ envelope: Envelope, from index: Int, on link: LinkID) {
        guard let (position, fromA) = wireIndex(of: index, link: link) else { return }
        let target = fromA ? wires[position].b : wires[position].a
        // A partition holds what crosses it until it heals (a link is reliable and in order, like TCP);
        // if the link dies first (a peer_timeout), what it held is lost with it.
        guard alive(target.node) else { return }
        let earliest = canTalk(index, target.node) ? now : max(now, partitionEnds)
        let arrival = max(target.lastArrival, earliest + delay())
        if fromA { wires[position].b.lastArrival = arrival } else { wires[position].a.lastArrival = arrival }
        schedule(.arrive(wire: position, toB: fromA, envelope), at: arrival)
    }

    /// This end stops; the other learns after the messages already on their way.
    /// A cut always ends this end's link (the runner's link task ends); a clean
    /// end over a wire that is already gone waits for the state's own cut.
    func endWire(of index: Int, link: LinkID, clean: Bool, reason: String? = nil) {
        guard let (position, fromA) = wireIndex(of: index, link: link) else {
            if !clean { schedule(.ended(node: index, link: link, error: reason), after: delay()) }
            return
        }
        let other = fromA ? wires[position].b : wires[position].a
        wires[position].open = clean  // a clean end still delivers what is queued
        let at = max(other.lastArrival, now) + delay()
        schedule(.ended(node: other.node, link: other.link, error: clean ? nil : "the link was cut"), at: at)
        schedule(.ended(node: index, link: link, error: clean ? nil : reason), at: at + delay())
        if clean {
            // After both ends have had their say, the wire is gone.
            schedule(.closeWire(position), at: at + .milliseconds(50))
        }
    }

    /// A link cut for silence must be a real silence: its peer crashed, stalled, was
    /// partitioned away or restarted within the timeout, or the wire is gone. A peer
    /// that ran and could talk the whole time was falsely accused.
    func checkSilence(cutBy index: Int, link: LinkID, reason: String) {
        report.silenceCuts += 1
        guard let (position, fromA) = wireIndex(of: index, link: link) else { return }
        let peer = fromA ? wires[position].b.node : wires[position].a.node
        let window = meshOptions.peerTimeout + meshOptions.pingInterval
        let quietSince = max(nodes[peer].startedAt, nodes[peer].stallEnded, lastHeal)
        guard alive(peer), nodes[peer].stalledUntil == nil, canTalk(index, peer), now - quietSince > window else { return }
        fail("no false suspicion: a master cuts a link for silence only when its peer was silent",
             "\(nodes[index].id) cut its link to \(nodes[peer].id) (\(reason)), but \(nodes[peer].id) ran and could talk since \(quietSince)")
    }

    func connect(_ from: Int, _ plan: DialPlan) {
        guard alive(from) else { return }
        let target = Int(plan.endpoint.address.host.dropFirst()) ?? -1
        // A stalled process does not answer a handshake.
        guard nodes.indices.contains(target), alive(target), nodes[target].stalledUntil == nil, canTalk(from, target), target != from else {
            feed(from, .dialFailed(plan, reason: "no answer", selfConnection: target == from))
            return
        }
        if let expected = plan.peer, expected != nodes[target].id {
            feed(from, .dialFailed(plan, reason: "another node answered", selfConnection: false))
            return
        }
        let dialler = LinkID(nodes[from].nextLinkID)
        nodes[from].nextLinkID += 1
        let listener = LinkID(nodes[target].nextLinkID)
        nodes[target].nextLinkID += 1
        wires.append(Wire(a: Half(node: from, link: dialler), b: Half(node: target, link: listener)))
        let position = wires.count - 1
        wireOf[from, default: [:]][dialler] = (position, true)
        wireOf[target, default: [:]][listener] = (position, false)
        let outbound = LinkInfo(id: dialler, peerID: nodes[target].id, peerName: nodes[target].id.rawValue, peerIncarnation: nodes[target].incarnation,
                                advertised: [endpoint(target)], labels: [:], direction: .outbound, transport: "sim", remoteAddress: "n\(target)", dial: plan)
        let inbound = LinkInfo(id: listener, peerID: nodes[from].id, peerName: nodes[from].id.rawValue, peerIncarnation: nodes[from].incarnation,
                               advertised: [endpoint(from)], labels: [:], direction: .inbound, transport: "sim", remoteAddress: "n\(from)")
        // Both ends checked each other's Hello; each decides on its own.
        for (index, info) in [(target, inbound), (from, outbound)] {
            guard nodes[index].state != nil, wires[position].open else { continue }
            let actions = nodes[index].state!.handle(.linkUp(info), at: clock(index))
            perform(actions, at: index)
            if let reason = actions.lazy.compactMap({ if case .refuse(info.id, let reason) = $0 { reason } else { nil } }).first {
                // The refusing end says why and ends its half; the other end's link ends after it.
                var goodbye = Envelope()
                goodbye.goodbye.reason = reason
                transmit(goodbye, from: index, on: info.id)
                endWire(of: index, link: info.id, clean: true)
            }
        }
    }

    func discover(_ index: Int) {
        if inChaos, Double.random(in: 0..<1, using: &random) < 0.05 {
            nodes[index].discoveryDown.toggle()  // flapping
        } else if !inChaos {
            nodes[index].discoveryDown = false
        }
        if nodes[index].discoveryDown {
            feed(index, .discovered(PeerSetUpdate(peers: [], health: .degraded(reason: "the signal server does not answer"))))
            return
        }
        // The signal server lists live nodes (it lags a crash by its TTL: here, until the next round).
        let peers = nodes.indices.filter { $0 != index && alive($0) }.map {
            DiscoveredPeer(nodeID: nodes[$0].id, displayName: nodes[$0].id.rawValue, endpoints: [endpoint($0)])
        }
        feed(index, .discovered(PeerSetUpdate(peers: peers)))
    }

    func publish(_ index: Int) {
        var line = Agentflow_Mesh_V1_TaskLog()
        line.task = "sim"
        line.text = "step \(report.steps)"
        guard nodes[index].state != nil,
              let (event, actions) = nodes[index].state!.withProtocol(ClusterProtocol.self, at: clock(index), { $0.publish(.taskLog(line), context: &$1) }) else { return }
        report.published += 1
        let inMesh = Set(nodes.indices.filter { alive($0) && !(nodes[$0].state?.topology.linkedPeers.isEmpty ?? true) })
        if inMesh.contains(index) {
            publishedAt["\(event.header.origin)/\(event.header.incarnation)/\(event.header.sequence)"] = (now, inMesh)
        }
        perform(actions, at: index)
    }

    func issueCommand(_ index: Int) {
        let target = Int.random(in: 0..<nodes.count, using: &random)
        let commandID = "c\(index)-\(random.next() % 1_000_000_000)"
        report.commands += 1
        let targetID = nodes[target].id
        _ = withCommands(index) {
            $0.issue(commandID: commandID, target: targetID, action: "ping", args: [:], idempotencyKey: nil, timeout: .seconds(3), context: &$1)
        }
    }

    func effect(_ value: any Sendable, at index: Int) {
        switch value {
        case let delivery as ClusterProtocol.Delivery:
            deliver(delivery.update, at: index)
        case let run as CommandProtocol.Run:
            let key = "\(nodes[index].id)/\(nodes[index].incarnation)/\(run.commandID)"
            if !executed.insert(key).inserted {
                fail("a command id is executed at most once", "\(run.commandID) ran twice on \(nodes[index].id)")
            }
            schedule(.commandDone(node: index, incarnation: nodes[index].incarnation, commandID: run.commandID,
                                  result: CommandRouter.Result(status: .ok, output: "pong")), after: .milliseconds(1))
        case is CommandProtocol.Answer:
            report.commandsAnswered += 1
        default:
            break
        }
    }

    func deliver(_ update: ClusterUpdate, at index: Int) {
        switch update {
        case .event(let event):
            let header = event.header
            report.delivered += 1
            let held = nodes[index].applied[header.origin]
            let next: Bool = if let (incarnation, sequence) = held {
                (header.incarnation == incarnation && header.sequence == sequence + 1) || (header.incarnation > incarnation && header.sequence == 1)
            } else {
                header.sequence == 1
            }
            if !next {
                fail("per-origin application is strictly ordered and gap-free",
                     "\(nodes[index].id) applied \(header.origin) #\(header.incarnation)/\(header.sequence) after \(held.map { "#\($0.0)/\($0.1)" } ?? "nothing")")
            }
            nodes[index].applied[header.origin] = (header.incarnation, header.sequence)
            // Visibility counts pairs that lived on: a crashed origin's last events, or a crashed observer, wait for the restart.
            if header.origin != nodes[index].id.rawValue, let (at, inMesh) = publishedAt["\(header.origin)/\(header.incarnation)/\(header.sequence)"], inMesh.contains(index),
               let origin = Int(header.origin.dropFirst()), nodes[origin].crashedAt.map({ $0 < at }) ?? true,
               nodes[index].crashedAt.map({ $0 < at }) ?? true, nodes[index].startedAt <= at,
               !disruptions.contains(where: { $0.from <= now && $0.to >= at }) {
                report.visibilityMilliseconds.append((now - at).inMilliseconds)
                if (now - at) > .milliseconds(40) {
                    trace?("\(now) \(nodes[index].id) applied \(header.origin) #\(header.sequence) \((now - at).inMilliseconds) ms after it was published")
                }
            }
        case .snapshot(let state):
            if let (incarnation, sequence) = nodes[index].applied[state.origin],
               (state.incarnation, state.lastSequence) <= (incarnation, sequence) {
                fail("no event is applied twice", "\(nodes[index].id) took a snapshot of \(state.origin) at #\(state.incarnation)/\(state.lastSequence), not ahead of #\(incarnation)/\(sequence)")
            }
            nodes[index].applied[state.origin] = (state.incarnation, state.lastSequence)
        }
    }

    // MARK: Faults

    func injectFault() {
        let roll = Int.random(in: 0..<100, using: &random)
        let live = nodes.indices.filter(alive)
        switch roll {
        case 0..<40:
            cutRandomLink()
        case 40..<55:
            guard partition == nil, nodes.count >= 3 else { return }
            let side = Set(nodes.indices.filter { _ in Bool.random(using: &random) })
            guard !side.isEmpty, side.count < nodes.count else { return }
            partition = side
            report.partitions += 1
            trace?("\(now) partition \(side.sorted().map { nodes[$0].id.rawValue }) from the rest")
            // Healed by the end of the chaos phase (at least half a second): the quiet phase's bound counts from there.
            let longest = max(500, (chaosEnds - now).inMilliseconds)
            let lasting = Duration.milliseconds(Int64.random(in: 500...max(500, min(6_000, Int64(longest))), using: &random))
            partitionEnds = now + lasting
            // After the heal the halves must find each other again (dials with backoff).
            disruptions.append((now, partitionEnds + meshOptions.backoff.maximum + .milliseconds(500)))
            schedule(.heal, after: lasting)
        case 55..<80:
            // Crash a node (keep at least two alive); its peers see a reset or, half the time, silence.
            guard live.count > 2, let victim = live.randomElement(using: &random) else { return }
            crash(victim, silent: Bool.random(using: &random))
            schedule(.restart(victim), after: .milliseconds(Int64.random(in: 200...3_000, using: &random)))
        case 80..<90:
            // Starve a node: it runs nothing for a while (a CPU hog, SIGSTOP), then everything at once.
            guard let victim = live.filter({ nodes[$0].stalledUntil == nil }).randomElement(using: &random) else { return }
            // Up to 6 s (longer than peer_timeout, or a stall-blind node would never accuse), over by 2 s after the chaos.
            let longest = max(300, (chaosEnds + .seconds(2) - now).inMilliseconds)
            let lasting = Duration.milliseconds(Int64.random(in: 300...max(300, min(6_000, Int64(longest))), using: &random))
            report.stalls += 1
            nodes[victim].stalledUntil = now + lasting
            trace?("\(now) \(nodes[victim].id) stalls for \(lasting)")
            disruptions.append((now, now + lasting + meshOptions.peerTimeout + .seconds(1)))
            schedule(.resume(victim), after: lasting)
        default:
            break  // a quiet beat
        }
    }

    /// Cuts a random open link: both ends see a reset, what was in flight is lost.
    func cutRandomLink() {
        let open = wires.indices.filter { wires[$0].open && alive(wires[$0].a.node) && alive(wires[$0].b.node) }
        guard let position = open.randomElement(using: &random) else { return }
        report.linkCuts += 1
        let wire = wires[position]
        trace?("\(now) cut \(nodes[wire.a.node].id)–\(nodes[wire.b.node].id)")
        wires[position].open = false
        schedule(.ended(node: wire.a.node, link: wire.a.link, error: "connection reset"), after: delay())
        schedule(.ended(node: wire.b.node, link: wire.b.link, error: "connection reset"), after: delay())
        noteIfSplit()
    }

    /// A cut or a crash that leaves the live masters without a path between some of
    /// them: nothing can cross until a redial, so visibility is not measured until the
    /// backoff's longest step and a dial have passed.
    func noteIfSplit() {
        let live = nodes.indices.filter(alive)
        guard let first = live.first else { return }
        var seen: Set<Int> = [first]
        var frontier = [first]
        while let node = frontier.popLast() {
            for wire in wires where wire.open {
                let next = wire.a.node == node ? wire.b.node : wire.b.node == node ? wire.a.node : -1
                if next >= 0, alive(next), seen.insert(next).inserted { frontier.append(next) }
            }
        }
        if seen.count < live.count {
            disruptions.append((now, now + meshOptions.backoff.maximum + .milliseconds(500)))
        }
    }

    func crash(_ index: Int, silent: Bool) {
        report.crashes += 1
        if silent { disruptions.append((now, now + meshOptions.peerTimeout + .seconds(1))) }
        defer { noteIfSplit() }
        nodes[index].crashedAt = now
        nodes[index].stalledUntil = nil
        nodes[index].deferred = []
        trace?("\(now) \(nodes[index].id) crashes\(silent ? " silently" : "")")
        nodes[index].state = nil
        running[index] = false
        for position in wires.indices where wires[position].open && (wires[position].a.node == index || wires[position].b.node == index) {
            wires[position].open = false
            let other = wires[position].a.node == index ? wires[position].b : wires[position].a
            if !silent {
                schedule(.ended(node: other.node, link: other.link, error: "connection reset"), after: delay())
            } else {
                // Silence: the peer's link stays until its peer_timeout cuts it.
                wires[position].open = false
            }
        }
    }

    // MARK: Final checks

    /// The mesh is whole: every live member is linked to its ring neighbours among the
    /// live, and sees exactly the live members as reachable. (invariant, detail) per breach.
    func violations() -> [(String, String)] {
        let live = nodes.indices.filter(alive)
        let ids = Set(live.map { nodes[$0].id })
        var found: [(String, String)] = []
        for index in live {
            guard let state = nodes[index].state else { continue }
            let want = MeshTopology.preferredPeers(of: nodes[index].id, among: ids, maxPeers: options.maxPeers)
            let have = Set(state.topology.links.keys)
            if !want.isSubset(of: have) {
                found.append(("after the faults stop, every live member is back at its target degree within \(options.quiet)",
                              "\(nodes[index].id) links \(have.map(\.rawValue).sorted()), wants \(want.map(\.rawValue).sorted())"))
            }
            // The status view: reachable exactly when alive (the graph of live members is connected).
            for other in nodes.indices where other != index {
                let reachable = state.topology.isReachable(nodes[other].id)
                if reachable != alive(other) {
                    found.append(("the status view marks an origin unreachable exactly when no path to it exists",
                                  "\(nodes[index].id) says \(nodes[other].id) is \(reachable ? "" : "un")reachable, but it is \(alive(other) ? "alive" : "down")"))
                }
            }
        }
        return found
    }

    func finalChecks() throws {
        let live = nodes.indices.filter(alive)
        for (invariant, detail) in violations().prefix(1) { fail(invariant, detail) }
        for index in live {
            guard let state = nodes[index].state else { continue }
            // Convergence: this node's view of every live origin is that origin's own.
            let origins = state.read(ClusterProtocol.self) { $0.store.origins } ?? [:]
            for other in live where other != index {
                guard let theirs = nodes[other].state?.read(ClusterProtocol.self, { $0.store.origins[nodes[other].id.rawValue]?.state }) ?? nil else { continue }
                let mine = origins[nodes[other].id.rawValue]?.state
                if mine?.incarnation != theirs.incarnation || mine?.lastSequence != theirs.lastSequence {
                    fail("after healing and quiet, every view of every live origin converges within \(options.quiet)",
                         "\(nodes[index].id) holds \(nodes[other].id) at #\(mine?.incarnation ?? 0)/\(mine?.lastSequence ?? 0), it is at #\(theirs.incarnation)/\(theirs.lastSequence)")
                }
            }
        }
        if let failure { throw failure }
    }
}
