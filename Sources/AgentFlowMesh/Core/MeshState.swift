public import AgentFlowCore
import AgentFlowProto
import Logging

/// One node's mesh, as I/O-free state: every known peer and why it is or is
/// not linked, the links and their liveness, the peer book, the link graph
/// (flooded link state), and the protocols that run over the links (cluster
/// events, commands). It is the one owner of all of it.
///
/// A runner (`MeshNode` for real sockets, the simulator for virtual ones)
/// feeds it inputs with the time they happen at, performs the actions it
/// returns in order, and calls again at `nextDeadline`. Nothing in here reads
/// a clock, sleeps, logs, or touches a file or socket, so a seed replays a
/// run exactly.
///
/// Rules it keeps:
/// - one link per pair: a second link to the same peer is resolved by
///   `resolveDuplicate` identically on both ends;
/// - under `max_peers`, the ring is laid over the members that are alive —
///   linked, reachable through the link graph, or listed by discovery and not
///   failing — so a dead member drops out once its neighbours notice;
/// - a link this node stops using (closing, lost, answered with Goodbye)
///   leaves the topology at once: this node's new link state goes to every
///   other link before anything else, and the protocols hear `linkDown`;
/// - liveness: anything received proves a link alive. A link silent for half
///   of `peer_timeout` is suspected: this node asks up to three neighbours
///   linked to that peer when they last heard from it (an indirect probe) and
///   pings it. At `peer_timeout` the link is cut, unless a neighbour heard the
///   peer within the suspicion window; then the peer is alive and only this
///   link is silent, and it gets three times as long. Like Lifeguard, a node
///   that finds itself starved (its timer ran late) stretches its timeouts for
///   a while, and does not count its own stall as the peers' silence.
public struct MeshState: Sendable {
    struct Peer: Sendable {
        var id: NodeID
        var name: String
        var discovered: [DiscoveredEndpoint] = []
        var labels: [String: String] = [:]
        var inDiscovery = false
        var link: LinkID?
        var dialling = false
        var failures = 0
        var nextAttempt = MeshInstant.zero
        var lastError: String?
        var lastConnectedMicros: Int64?
        var lastDisconnectedMicros: Int64?
        var sources: Set<String> = []
    }

    struct Link: Sendable {
        var info: LinkInfo
        var connectedAt: MeshNow
        var lastReceived: MeshInstant
        var nextPing: MeshInstant
        /// Set once this node stopped using the link (its Goodbye, the peer's, or a cut).
        var closing: (reason: String, at: MeshInstant)?
        var goodbyeReceived: String?
        var roundTrip: Duration?
        var received: UInt64 = 0
        /// Suspicion: when the last probe round went out, and how many neighbours it asked.
        var probedAt: MeshInstant?
        var probesAsked = 0
        /// The latest time a neighbour says it heard from this link's peer (from probe replies).
        var vouchedAt: MeshInstant?
    }

    struct Unidentified: Sendable {
        var answeredBy: NodeID?
        var isSelf = false
        var dialling = false
        var failures = 0
        var nextAttempt = MeshInstant.zero
    }

    struct LinkStateRecord: Sendable {
        var incarnation: UInt64
        var version: UInt64
        var peers: Set<NodeID>
    }

    public private(set) var identity: LocalIdentity
    public let options: MeshOptions
    public private(set) var topology: MeshTopologyView
    var protocols: [any MeshProtocol]
    var protocolIndices: [ObjectIdentifier: Int] = [:]
    var peers: [NodeID: Peer] = [:]
    var links: [LinkID: Link] = [:]
    var book: PeerBook
    var retired: Set<NodeID> = []
    var linkStates: [NodeID: LinkStateRecord] = [:]
    var linksVersion: UInt64 = 0
    var unidentified: [DiscoveredEndpoint: Unidentified] = [:]
    var reachability: [NodeID: PeerReachability] = [:]
    public private(set) var ownReachability: PeerReachability?
    public private(set) var discoveryHealth: PeerSetUpdate.Health?
    public private(set) var discoveryUpdates = 0
    public private(set) var dialFailures = 0
    public private(set) var linksEstablished = 0
    /// Lifeguard's local health multiplier, 0 (healthy) to 8: suspicion and
    /// peer timeouts are stretched by (1 + it). It rises each time this node's
    /// timer runs late (it was starved) and falls back one step per quiet `peer_timeout`.
    public private(set) var localHealth = 0
    var healthChangedAt = MeshInstant.zero
    var stallBlind = false
    /// Links cut because their peer went silent (for tests and the status).
    public private(set) var silenceCuts = 0
    var shuttingDown = false
    var exchangeDue = false
    var lastExchange: MeshInstant?
    var lastBookSave: MeshInstant?
    var lastFullSave: MeshInstant?
    var random: SplitMix64
    var nextNonce: UInt64 = 1
    /// Something that dialling or pruning depends on changed.
    var planDue = true
    /// When a backoff ends or a link becomes prunable: the plan is due again then.
    var planAt: MeshInstant?
    /// The input was an envelope: only the protocols' deadlines need a look.
    var lightStep = false
    /// Dialling or links changed in this step: every deadline needs a look.
    var planChanged = false
    /// When to be called again; nil when nothing is pending.
    public private(set) var nextDeadline: MeshInstant?
    /// Actions of the input being handled.
    var pending: [MeshAction] = []
    /// The input being handled happens at this time.
    var now = MeshNow(instant: .zero, wallMicros: 0)

    /// - Parameters:
    ///   - book: the peer book as loaded from disk (the runner reads the file).
    ///   - protocols: what runs over the links, in dispatch order.
    ///   - seed: for backoff jitter; a simulation passes its own.
    public init(identity: LocalIdentity, options: MeshOptions, book: PeerBook, protocols: [any MeshProtocol], seed: UInt64, now: MeshNow) {
        self.identity = identity
        self.options = options
        self.protocols = protocols
        topology = MeshTopologyView(localID: identity.nodeID)
        random = SplitMix64(seed: seed)
        self.now = now
        var book = book
        let stale = book.expire(nowMicros: now.wallMicros, keep: [])
        if !stale.isEmpty { pending.append(.log(.info, "peer book: forgot \(stale.count) peer(s) not seen for \(options.peerBookMaxAge)")) }
        book.remove(identity.nodeID)
        self.book = book
        for entry in book.entries.values {
            var peer = Peer(id: entry.nodeID, name: entry.name)
            peer.labels = entry.labels
            peer.sources.insert("peer_book")
            peers[entry.nodeID] = peer
        }
        if !book.entries.isEmpty { pending.append(.log(.info, "peer book: \(book.entries.count) known peer(s) from \(options.peerBookFile ?? "memory")")) }
    }

    // MARK: Handling inputs

    /// Handles one input at `now`; returns what the runner must do, in order.
    public mutating func handle(_ input: MeshInput, at now: MeshNow) -> [MeshAction] {
        self.now = now
        switch input {
        case .started(let advertised):
            identity.advertised = advertised
            planDue = true
        case .discovered(let update):
            applyDiscovery(update)
            planDue = true
        case .dialFailed(let plan, let reason, let selfConnection):
            dialFailed(plan, reason: reason, selfConnection: selfConnection)
            planDue = true
        case .linkUp(let info):
            linkUp(info)
        case .linkDown(let id, let error):
            linkDown(id, error: error)
        case .envelope(let envelope, let id):
            receive(envelope, on: id)
            // The common case — an event, a sync, a ping — moves no mesh deadline earlier.
            lightStep = true
        case .tick:
            noticeStall()
            upkeep()
            if let planAt, planAt <= now.instant { planDue = true }
        case .reachability(let value):
            let changed = ownReachability.map { ($0.dialable, $0.publicAddress, $0.mapping, $0.filtering) != (value.dialable, value.publicAddress, value.mapping, value.filtering) } ?? true
            ownReachability = value
            if changed { exchangeDue = true }
            planDue = true
        case .shutdown:
            beginShutdown()
        }
        return finish()
    }

    /// Runs `body` on the registered protocol of type `P` (for example, to
    /// publish an event) with a context for its answers; returns its result
    /// and the actions to perform. Nil when no such protocol is registered.
    public mutating func withProtocol<P: MeshProtocol, R>(_ type: P.Type, at now: MeshNow, _ body: (inout P, inout MeshContext) -> R) -> (R, [MeshAction])? {
        guard let index = protocolIndex(P.self) else { return nil }
        self.now = now
        var context = makeContext()
        // In place: a copy of the protocol would copy its whole store on the first change.
        let result = Self.mutate(&protocols[index], as: P.self) { body(&$0, &context) }
        pending += context.actions
        return (result, finish())
    }

    /// Runs `body` on `value` as a `P`, without copying it out of its box.
    private static func mutate<T: MeshProtocol, P: MeshProtocol, R>(_ value: inout T, as type: P.Type, _ body: (inout P) -> R) -> R {
        precondition(T.self == P.self, "\(T.self) is not \(P.self)")
        return withUnsafeMutablePointer(to: &value) { pointer in
            pointer.withMemoryRebound(to: P.self, capacity: 1) { body(&$0.pointee) }
        }
    }

    /// Where `P` sits among the protocols (found once, then remembered).
    mutating func protocolIndex<P: MeshProtocol>(_ type: P.Type) -> Int? {
        let key = ObjectIdentifier(type)
        if let index = protocolIndices[key] { return index }
        guard let index = protocols.firstIndex(where: { $0 is P }) else { return nil }
        protocolIndices[key] = index
        return index
    }

    /// Reads the registered protocol of type `P`.
    public func read<P: MeshProtocol, R>(_ type: P.Type, _ body: (P) -> R) -> R? {
        guard let value = protocols.first(where: { $0 is P }) as? P else { return nil }
        return body(value)
    }

    private mutating func finish() -> [MeshAction] {
        if planDue {
            planDue = false
            planChanged = true
            plan()
        }
        if exchangeDue || lastExchange.map({ now.instant - $0 >= options.peerExchangeInterval }) ?? false {
            exchangeDue = false
            lastExchange = now.instant
            let exchange = peerExchange()
            for peer in topology.linkedPeers where peer != identity.nodeID {
                pending.append(.sendInOrder(topology.links[peer]!, exchange))
            }
        }
        if lightStep && !planChanged {
            // Only a protocol can have asked for an earlier wake-up.
            for value in protocols { if let due = value.nextDeadline, nextDeadline.map({ due < $0 }) ?? true { nextDeadline = max(due, now.instant + .milliseconds(1)) } }
        } else {
            computeDeadline()
        }
        lightStep = false
        planChanged = false
        defer { pending = [] }
        return pending
    }

    func makeContext() -> MeshContext {
        MeshContext(now: now, localID: identity.nodeID, topology: topology)
    }

    /// Runs `body` over every protocol, collecting their actions.
    mutating func eachProtocol(_ body: (inout any MeshProtocol, inout MeshContext) -> Void) {
        for index in protocols.indices {
            var context = makeContext()
            body(&protocols[index], &context)
            pending += context.actions
        }
    }

    // MARK: Discovery

    mutating func applyDiscovery(_ update: PeerSetUpdate) {
        discoveryHealth = update.health
        discoveryUpdates += 1
        var present: Set<NodeID> = []
        for found in update.peers where found.nodeID != identity.nodeID {
            present.insert(found.nodeID)
            retired.remove(found.nodeID)
            var peer = peers[found.nodeID] ?? Peer(id: found.nodeID, name: found.displayName)
            let moved = peer.discovered != found.endpoints
            peer.name = found.displayName
            peer.labels = found.labels
            peer.discovered = found.endpoints
            peer.inDiscovery = true
            peer.sources.insert("discovery")
            if moved && peer.link == nil && !peer.dialling {
                // New or changed addresses (an IP change): try them now rather than after the backoff.
                peer.nextAttempt = now.instant
            }
            peers[found.nodeID] = peer
            if book.record(found.nodeID, name: found.displayName, endpoints: found.endpoints, labels: found.labels, seenAtMicros: now.wallMicros) {
                exchangeDue = true
            }
        }
        let offered = Set(update.unidentified.filter { identity.transports.contains($0.transport) && !identity.advertised.contains($0) })
        unidentified = unidentified.filter { offered.contains($0.key) }
        for endpoint in offered where unidentified[endpoint] == nil {
            unidentified[endpoint] = Unidentified()
        }
        for (endpoint, entry) in unidentified {
            guard let id = entry.answeredBy, !retired.contains(id) else { continue }
            present.insert(id)
            var peer = peers[id] ?? Peer(id: id, name: id.rawValue)
            if !peer.discovered.contains(endpoint) { peer.discovered.append(endpoint) }
            peer.inDiscovery = true
            peer.sources.insert("discovery")
            peers[id] = peer
        }
        for (id, var peer) in peers where peer.inDiscovery && !present.contains(id) {
            peer.inDiscovery = false
            peer.sources.remove("discovery")
            peers[id] = peer
            if update.isAuthoritative && update.health == .healthy {
                retire(id, reason: "removed from this node's peers file")
            }
        }
    }

    mutating func retire(_ id: NodeID, reason: String) {
        pending.append(.log(.info, "peer \(id): \(reason); closing its link and forgetting it"))
        retired.insert(id)
        if let link = peers[id]?.link { stopUsing(link, reason: reason, goodbye: true) }
        peers.removeValue(forKey: id)
        book.remove(id)
    }

    // MARK: Dialling

    /// The addresses to try for `id`: on the first transport in this node's
    /// order of preference that the peer offers, freshest first, then on the next.
    func endpoints(for id: NodeID) -> [DiscoveredEndpoint] {
        var seen: Set<DiscoveredEndpoint> = []
        var result: [DiscoveredEndpoint] = []
        let candidates = knownEndpoints(of: id)
        for transport in identity.transports {
            for endpoint in candidates where endpoint.transport == transport && seen.insert(endpoint).inserted {
                result.append(endpoint)
            }
        }
        return result
    }

    /// Every address known for `id`, freshest source first: discovery, the peer's own Hello, the book.
    func knownEndpoints(of id: NodeID) -> [DiscoveredEndpoint] {
        let advertised = peers[id]?.link.flatMap { links[$0]?.info.advertised } ?? []
        return (peers[id]?.discovered ?? []) + advertised + (book.entries[id]?.discoveredEndpoints ?? [])
    }

    func offeredTransports(of id: NodeID) -> [String] {
        Array(Set(knownEndpoints(of: id).map(\.transport))).sorted()
    }

    /// True when this node leaves the dialling of `id` to `id` (its dial-back
    /// failed, and this node is reachable from outside or has not probed).
    func leavesDialling(to id: NodeID) -> Bool {
        reachability[id]?.dialable == .no && ownReachability?.dialable != .no
    }

    /// The members the ring is laid over: this node, its links, every node the
    /// link graph reaches, and discovered peers that are not failing. A node
    /// known only from the book, or whose every neighbour dropped it, is not one.
    public func aliveMembers() -> Set<NodeID> {
        var members: Set<NodeID> = [identity.nodeID]
        for (id, peer) in peers where !retired.contains(id) {
            if peer.link != nil || topology.isReachable(id) || (peer.inDiscovery && peer.failures < 2) {
                members.insert(id)
            }
        }
        return members
    }

    mutating func plan() {
        guard !shuttingDown else { return }
        let instant = now.instant
        let members = aliveMembers()
        var wanted = MeshTopology.preferredPeers(of: identity.nodeID, among: members, maxPeers: options.maxPeers)
        if ownReachability?.dialable == .no {
            // Peers outside leave the dialling to this node: it also dials those that prefer it.
            wanted.formUnion(members.filter { $0 != identity.nodeID && MeshTopology.preferredPeers(of: $0, among: members, maxPeers: options.maxPeers).contains(identity.nodeID) })
        }
        // Known peers that are not (yet) members are tried too, with their own
        // backoff, a few at a time: how a node that knows only its book finds
        // the mesh, and how the halves of a healed partition find each other.
        let probes = peers.values.filter { !members.contains($0.id) && !retired.contains($0.id) }.map(\.id).sorted()
        let probing = probes.filter { peers[$0]?.dialling == true }.count
        var probeBudget = max(0, max(1, options.maxPeers) - probing)
        for id in wanted.sorted() + probes {
            guard var peer = peers[id], peer.link == nil, !peer.dialling, instant >= peer.nextAttempt else { continue }
            let isProbe = !members.contains(id)
            if isProbe {
                guard options.maxPeers > 0 ? probeBudget > 0 : true else { continue }
            }
            if leavesDialling(to: id) {
                peer.lastError = "not dialable from outside (its reach probe); it dials this node"
                peer.nextAttempt = instant + .seconds(1)
                peers[id] = peer
                continue
            }
            let candidates = endpoints(for: id)
            guard !candidates.isEmpty else {
                let offered = offeredTransports(of: id)
                peer.lastError = offered.isEmpty
                    ? "no endpoint known for this peer"
                    : "it offers only \(offered.joined(separator: ", ")); this node speaks \(identity.transports.joined(separator: ", ")) (it is reached through a relay)"
                peer.nextAttempt = instant + .seconds(1)
                peers[id] = peer
                continue
            }
            if isProbe { probeBudget -= 1 }
            peer.dialling = true
            peers[id] = peer
            pending.append(.dial(DialPlan(peer: id, endpoint: candidates[peer.failures % candidates.count])))
        }
        planUnidentified()
        if options.maxPeers > 0 {
            var preferred: [NodeID: Set<NodeID>] = [identity.nodeID: MeshTopology.preferredPeers(of: identity.nodeID, among: members, maxPeers: options.maxPeers)]
            func prefers(_ a: NodeID, _ b: NodeID) -> Bool {
                if preferred[a] == nil { preferred[a] = MeshTopology.preferredPeers(of: a, among: members.union([a, b]), maxPeers: options.maxPeers) }
                return preferred[a]!.contains(b)
            }
            for (id, link) in liveLinks() where instant - link.connectedAt.instant >= Self.pruneDelay
                && !(prefers(identity.nodeID, id) || prefers(id, identity.nodeID)) {
                stopUsing(link.info.id, reason: "mesh.max_peers = \(options.maxPeers): neither end prefers this link", goodbye: true)
            }
        }
    }

    /// A surplus link lives this long before it is pruned, so a ring that is
    /// still forming does not drop links it is about to want.
    public static let pruneDelay: Duration = .seconds(5)

    mutating func planUnidentified() {
        guard unidentified.values.contains(where: { $0.answeredBy == nil && !$0.isSelf }) else { return }
        let known = Set(peers.keys.flatMap { endpoints(for: $0) })
        for (endpoint, var entry) in unidentified.sorted(by: { $0.key.description < $1.key.description }) {
            guard entry.answeredBy == nil, !entry.isSelf, !entry.dialling, now.instant >= entry.nextAttempt, !known.contains(endpoint) else { continue }
            entry.dialling = true
            unidentified[endpoint] = entry
            pending.append(.dial(DialPlan(peer: nil, endpoint: endpoint)))
        }
    }

    mutating func backoff(afterFailures failures: Int) -> Duration {
        options.backoff.delay(afterFailures: failures, using: &random)
    }

    mutating func dialFailed(_ plan: DialPlan, reason: String, selfConnection: Bool) {
        dialFailures += 1
        guard let id = plan.peer else {
            guard var entry = unidentified[plan.endpoint] else { return }
            entry.dialling = false
            if selfConnection {
                entry.isSelf = true
                unidentified[plan.endpoint] = entry
                pending.append(.log(.debug, "\(plan.endpoint) is this node itself; not dialling it again"))
                return
            }
            entry.failures += 1
            let delay = backoff(afterFailures: entry.failures)
            entry.nextAttempt = now.instant + delay
            unidentified[plan.endpoint] = entry
            pending.append(.log(entry.failures <= 1 || entry.failures % 10 == 0 ? .info : .debug,
                                "cannot reach \(plan.endpoint), found by discovery (attempt \(entry.failures)): \(reason); next try in \(delay)"))
            return
        }
        guard var peer = peers[id] else { return }
        peer.dialling = false
        peer.failures += 1
        let delay = backoff(afterFailures: peer.failures)
        peer.nextAttempt = now.instant + delay
        // A peer that left with a Goodbye keeps saying so: its failed redials are no news.
        let marker = "the peer said goodbye: "
        let farewell = peer.lastError.flatMap { text -> Substring? in
            guard let start = text.indices.first(where: { text[$0...].hasPrefix(marker) }) else { return nil }
            return text[start...]
        }
        peer.lastError = "dial \(plan.endpoint): \(reason)" + (farewell.map { "; before that, \($0)" } ?? "")
        peers[id] = peer
        pending.append(.log(peer.failures <= 1 || peer.failures % 10 == 0 ? .info : .debug,
                            "cannot reach \(id) at \(plan.endpoint) (attempt \(peer.failures)): \(reason); next try in \(delay)"))
    }

    // MARK: Links

    mutating func linkUp(_ info: LinkInfo) {
        let id = info.peerID
        if let plan = info.dial {
            if plan.peer == nil, var entry = unidentified[plan.endpoint] {
                entry.answeredBy = id
                entry.dialling = false
                entry.failures = 0
                unidentified[plan.endpoint] = entry
                var peer = peers[id] ?? Peer(id: id, name: id.rawValue)
                if !peer.discovered.contains(plan.endpoint) { peer.discovered.append(plan.endpoint) }
                peer.inDiscovery = true
                peer.sources.insert("discovery")
                peers[id] = peer
                pending.append(.log(.info, "\(plan.endpoint) is \(id)"))
            }
            peers[id]?.dialling = false
        }
        if info.direction == .outbound { peers[id]?.dialling = false }
        if shuttingDown { return refuse(info, "this node is shutting down") }
        if retired.contains(id) { return refuse(info, "\(identity.nodeID) does not list \(id) in its peers file") }
        var peer = peers[id] ?? Peer(id: id, name: info.peerName)
        var displaced: LinkID?
        if let existing = peer.link, let current = links[existing] {
            guard resolveDuplicate(existing: current.info, new: info) else {
                return refuse(info, "a link between \(identity.nodeID) and \(id) already exists")
            }
            displaced = existing
        }
        let link = Link(info: info, connectedAt: now, lastReceived: now.instant, nextPing: now.instant + options.pingInterval)
        links[info.id] = link
        peer.link = info.id
        peer.name = info.peerName
        peer.labels = info.labels
        // `failures` is cleared only once a link has proved itself (see linkDown).
        peer.lastError = nil
        peer.lastConnectedMicros = now.wallMicros
        peer.sources.insert(info.direction == .inbound ? "inbound" : "dialled")
        peers[id] = peer
        linksEstablished += 1
        book.record(id, name: info.peerName, endpoints: info.advertised, labels: info.labels, seenAtMicros: now.wallMicros)
        pending.append(.accept(info.id))
        if let displaced {
            links[displaced]?.closing = ("replaced by a newer link", now.instant)
            pending.append(.close(displaced, reason: "replaced by a newer link"))
        }
        pending.append(.log(.info, "link to \(id) up (\(info.direction.rawValue), \(info.transport), \(info.remoteAddress))"))
        // A link that replaces a live one leaves the graph as it was; one that replaces a link
        // already out of use (a peer back after a crash, before its old link ended) is new to it.
        let newNeighbour = topology.links[id] == nil
        topology.setLink(info.id, to: id)
        topology.recomputePaths()
        planDue = true
        // The others hear of the new link; the new neighbour gets the whole picture (book and link graph).
        if newNeighbour { floodOwnLinkState(except: id) }
        pending.append(.send(info.id, ping(at: now)))
        pending.append(.sendInOrder(info.id, peerExchange()))
        eachProtocol { $0.linkUp(id, context: &$1) }
    }

    private mutating func refuse(_ info: LinkInfo, _ reason: String) {
        pending.append(.log(.debug, "link \(info.direction == .inbound ? "from" : "to") \(info.peerID) not kept: \(reason)"))
        pending.append(.refuse(info.id, reason: reason))
    }

    /// True when `new` should replace `existing` (both to the same peer).
    /// A newer run of the peer wins; between two links of the same run, the
    /// one dialled by the smaller node id wins; a second link dialled by the
    /// same side replaces the first (which that side has given up on).
    func resolveDuplicate(existing: LinkInfo, new: LinkInfo) -> Bool {
        if existing.peerIncarnation != new.peerIncarnation { return new.peerIncarnation > existing.peerIncarnation }
        if existing.direction != new.direction {
            let dialler = MeshTopology.survivingDialler(identity.nodeID, new.peerID)
            let newDialler = new.direction == .outbound ? identity.nodeID : new.peerID
            return newDialler == dialler
        }
        return true
    }

    /// Takes a link out of use now: no more sends on it, the link graph and
    /// the protocols learn at once. With `goodbye`, the runner says why and
    /// ends our half; otherwise it cuts the link.
    mutating func stopUsing(_ id: LinkID, reason: String, goodbye: Bool) {
        guard var link = links[id] else { return }
        let wasLive = link.closing == nil
        if wasLive { link.closing = (reason, now.instant) }
        links[id] = link
        pending.append(goodbye ? .close(id, reason: reason) : .abort(id, reason: reason))
        guard wasLive, topology.links[link.info.peerID] == id else { return }
        topology.removeLink(to: link.info.peerID)
        topology.recomputePaths()
        planDue = true
        floodOwnLinkState(except: nil)
        let peer = link.info.peerID
        eachProtocol { $0.linkDown(peer, context: &$1) }
    }

    mutating func linkDown(_ id: LinkID, error: String?) {
        guard let link = links[id] else { return }
        let peerID = link.info.peerID
        let closedByUs = link.goodbyeReceived == nil ? link.closing?.reason : nil
        if link.closing == nil {
            // The transport ended a link still in use: out of the topology now (cutting it again is harmless).
            stopUsing(id, reason: error ?? "the peer ended the link", goodbye: false)
        }
        links.removeValue(forKey: id)
        planDue = true
        guard var peer = peers[peerID], peer.link == id else { return }
        peer.link = nil
        peer.lastDisconnectedMicros = now.wallMicros
        let lived = (now.instant - link.connectedAt.instant).inSeconds
        if let goodbye = link.goodbyeReceived {
            peer.lastError = "the peer said goodbye: \(goodbye)"
        } else if let closedByUs {
            peer.lastError = "closed by this node: \(closedByUs)"
        } else if let error {
            peer.lastError = "link lost: \(error)"
        } else {
            peer.lastError = "the peer ended the link"
        }
        // A link that lived a while earns a quick redial; one that keeps dying young backs off.
        if lived > 10 {
            peer.failures = link.goodbyeReceived == nil ? 0 : 1
        } else {
            peer.failures += 1
        }
        let delay = peer.failures == 0 ? .milliseconds(Int64.random(in: 50...300, using: &random)) : backoff(afterFailures: peer.failures)
        peer.nextAttempt = now.instant + delay
        peers[peerID] = peer
        book.record(peerID, name: nil, endpoints: [], labels: nil, seenAtMicros: now.wallMicros)
        pending.append(.log(.info, "link to \(peerID) ended after \(lived.fixed(1))s: \(peer.lastError ?? "")"))
    }

    /// Live links (admitted, not closing), by peer.
    func liveLinks() -> [(NodeID, Link)] {
        topology.linkedPeers.compactMap { peer in topology.links[peer].flatMap { links[$0] }.map { (peer, $0) } }
    }

    // MARK: Envelopes

    mutating func receive(_ envelope: Envelope, on id: LinkID) {
        // In place: this runs for every envelope, and a copy of the link would copy its info.
        guard links[id] != nil else { return }
        links[id]!.lastReceived = now.instant
        links[id]!.received += 1
        if links[id]!.probedAt != nil { clearSuspicion(id) }
        let peer = links[id]!.info.peerID
        let live = links[id]!.closing == nil
        guard let body = envelope.body else { return }  // a kind this version does not know: skipped, as the contract says
        switch body {
        case .ping(let ping):
            var pong = Envelope()
            pong.pong.nonce = ping.nonce
            pong.pong.pingSentUnixMicros = ping.sentUnixMicros
            pending.append(.send(id, pong))
        case .pong(let pong):
            links[id]?.roundTrip = .microseconds(max(0, now.wallMicros - pong.pingSentUnixMicros))
        case .probeRequest(let request):
            // Answered from this node's own link: when did it last hear from the target?
            var reply = Envelope()
            reply.probeReply.target = request.target
            reply.probeReply.nonce = request.nonce
            if let target = NodeID(request.target), let link = topology.links[target].flatMap({ links[$0] }) {
                reply.probeReply.linked = true
                reply.probeReply.silenceMillis = UInt64(max(0, (now.instant - link.lastReceived).inMilliseconds))
                reply.probeReply.incarnation = link.info.peerIncarnation
            }
            pending.append(.send(id, reply))
        case .probeReply(let reply):
            guard reply.linked, let target = NodeID(reply.target), let suspect = topology.links[target], let link = links[suspect], link.probedAt != nil else { return }
            if reply.incarnation > link.info.peerIncarnation {
                // The neighbour hears a newer run of the peer: this link goes to a run that died.
                let reason = "nothing from \(target) for \((now.instant - link.lastReceived).inSeconds.fixed(1))s, and \(peer) hears a newer run of it: this link is to a run that ended"
                pending.append(.log(.info, reason))
                silenceCuts += 1
                stopUsing(suspect, reason: reason, goodbye: false)
                return
            }
            guard reply.incarnation == link.info.peerIncarnation || reply.incarnation == 0 else { return }
            let heard = now.instant - .milliseconds(Int64(min(reply.silenceMillis, 86_400_000)))
            if links[suspect]!.vouchedAt.map({ heard > $0 }) ?? true { links[suspect]!.vouchedAt = heard }
        case .peerExchange(let exchange):
            learn(exchange, from: peer, live: live)
        case .goodbye(let goodbye):
            let reason = String(goodbye.reason.prefix(256))
            guard live else {
                // This node closed first: the peer's goodbye only answers it, and the reason stays ours.
                pending.append(.log(.debug, "\(peer) says goodbye: \(reason)"))
                return
            }
            links[id]?.goodbyeReceived = reason
            peers[peer]?.lastError = "the peer said goodbye: \(reason)"
            pending.append(.log(.info, "\(peer) says goodbye: \(reason)"))
            stopUsing(id, reason: "answering the peer's goodbye (\(reason))", goodbye: true)
        case .hello:
            pending.append(.log(.warning, "\(peer) sent a second Hello; ignored"))
        default:
            guard let index = protocols.firstIndex(where: { type(of: $0).handles(body) }) else { return }
            var context = makeContext()
            protocols[index].receive(envelope, from: peer, context: &context)
            pending += context.actions
        }
    }

    mutating func ping(at now: MeshNow) -> Envelope {
        nextNonce &+= 1
        var envelope = Envelope()
        envelope.ping.nonce = nextNonce
        envelope.ping.sentUnixMicros = now.wallMicros
        return envelope
    }

    // MARK: Peer exchange and link state

    /// This node's own entry: its endpoints, reachability and link state.
    func ownInfo() -> Agentflow_Mesh_V1_PeerInfo {
        var me = Agentflow_Mesh_V1_PeerInfo()
        me.nodeID = identity.nodeID.rawValue
        me.endpoints = identity.advertised.map(\.wire)
        me.lastSeenUnixMicros = now.wallMicros
        me.labels = identity.labels
        me.linkedPeers = topology.linkedPeers.map(\.rawValue)
        me.linksIncarnation = identity.incarnation
        me.linksVersion = linksVersion
        if let ownReachability { me.reachability = ownReachability.wire }
        return me
    }

    /// Sends this node's new link state to every live link but `except`. Link state
    /// and peer exchanges go in order and are never dropped for a full queue: a lost
    /// one would leave a neighbour relaying by a stale graph until the next change.
    mutating func floodOwnLinkState(except: NodeID?) {
        linksVersion += 1
        var exchange = Agentflow_Mesh_V1_PeerExchange()
        exchange.peers = [ownInfo()]
        var envelope = Envelope()
        envelope.peerExchange = exchange
        for peer in topology.linkedPeers where peer != except {
            pending.append(.sendInOrder(topology.links[peer]!, envelope))
        }
    }

    /// What this node tells a peer it knows: itself, the book, and the link graph.
    mutating func peerExchange() -> Envelope {
        for peer in topology.links.keys { book.record(peer, name: nil, endpoints: [], labels: nil, seenAtMicros: now.wallMicros) }
        var exchange = Agentflow_Mesh_V1_PeerExchange()
        exchange.peers.append(ownInfo())
        var listed: Set<NodeID> = [identity.nodeID]
        for entry in book.entries.values.sorted(by: { $0.lastSeenMicros > $1.lastSeenMicros }).prefix(1_000) {
            var info = Agentflow_Mesh_V1_PeerInfo()
            info.nodeID = entry.nodeID.rawValue
            info.endpoints = entry.discoveredEndpoints.map(\.wire)
            info.lastSeenUnixMicros = entry.lastSeenMicros
            info.labels = entry.labels
            if let known = reachability[entry.nodeID] { info.reachability = known.wire }
            if let state = linkStates[entry.nodeID] { Self.attach(state, to: &info) }
            exchange.peers.append(info)
            listed.insert(entry.nodeID)
        }
        for (id, state) in linkStates.sorted(by: { $0.key < $1.key }) where !listed.contains(id) && exchange.peers.count < 2_000 {
            var info = Agentflow_Mesh_V1_PeerInfo()
            info.nodeID = id.rawValue
            Self.attach(state, to: &info)
            exchange.peers.append(info)
        }
        var envelope = Envelope()
        envelope.peerExchange = exchange
        return envelope
    }

    static func attach(_ state: LinkStateRecord, to info: inout Agentflow_Mesh_V1_PeerInfo) {
        info.linkedPeers = state.peers.sorted().map(\.rawValue)
        info.linksIncarnation = state.incarnation
        info.linksVersion = state.version
    }

    /// Folds a peer's exchange into the book, the reachability table and the
    /// link graph; newer link state is passed on to the other links.
    mutating func learn(_ exchange: Agentflow_Mesh_V1_PeerExchange, from sender: NodeID, live: Bool) {
        var changedStates: [Agentflow_Mesh_V1_PeerInfo] = []
        var graphChanged = false
        for info in exchange.peers.prefix(2_000) {
            guard let id = NodeID(info.nodeID), id != identity.nodeID, !retired.contains(id) else { continue }
            // Link state: a versioned report, or (from a peer that does not version) the sender's own list.
            if info.linksVersion > 0 || (id == sender && info.linksIncarnation == 0) {
                let record = LinkStateRecord(incarnation: info.linksIncarnation, version: info.linksVersion,
                                             peers: Set(info.linkedPeers.prefix(10_000).compactMap { NodeID($0) }))
                let held = linkStates[id]
                let newer = held.map { (record.incarnation, record.version) > ($0.incarnation, $0.version) || record.version == 0 } ?? true
                if newer {
                    linkStates[id] = record
                    if held?.peers != record.peers {
                        topology.reported[id] = record.peers
                        graphChanged = true
                    }
                    if record.version > 0 { changedStates.append(info) }
                }
            }
            if info.hasReachability, let heard = PeerReachability(wire: info.reachability) {
                var value = heard
                value.checkedAtMicros = min(value.checkedAtMicros, now.wallMicros)
                if let known = reachability[id], known.checkedAtMicros >= value.checkedAtMicros {
                } else {
                    if reachability[id]?.dialable != value.dialable {
                        pending.append(.log(.info, "\(id) says it is \(value.dialable == .no ? "not " : "")dialable from outside\(value.dialable == .no ? ": it dials out; this node leaves the dialling to it" : "")"))
                    }
                    reachability[id] = value
                }
            }
        }
        if graphChanged {
            topology.recomputePaths()
            planDue = true
        }
        if !changedStates.isEmpty {
            // Flood: every newer report goes on to the other live links, unchanged.
            var forward = Agentflow_Mesh_V1_PeerExchange()
            forward.peers = changedStates.map { info in
                var state = Agentflow_Mesh_V1_PeerInfo()
                state.nodeID = info.nodeID
                state.linkedPeers = info.linkedPeers
                state.linksIncarnation = info.linksIncarnation
                state.linksVersion = info.linksVersion
                return state
            }
            var envelope = Envelope()
            envelope.peerExchange = forward
            // A neighbour linked to a report's own node got it from that node directly.
            let sources = Set(changedStates.compactMap { NodeID($0.nodeID) })
            for peer in topology.linkedPeers where peer != sender && !sources.allSatisfy({ topology.isLinked(peer, $0) }) {
                pending.append(.sendInOrder(topology.links[peer]!, envelope))
            }
        }
        let entries: [PeerBook.Entry] = exchange.peers.prefix(2_000).compactMap { info in
            guard let id = NodeID(info.nodeID), id != identity.nodeID, !retired.contains(id) else { return nil }
            // Only news can change the book: skip what is not newer than what it holds.
            if let held = book.entries[id], held.lastSeenMicros >= min(info.lastSeenUnixMicros, now.wallMicros) { return nil }
            let endpoints = info.endpoints.prefix(16).compactMap(DiscoveredEndpoint.init(wire:))
            guard !endpoints.isEmpty else { return nil }
            // Nobody vouches for the future: a clock ahead of ours counts as now.
            return PeerBook.Entry(nodeID: id, name: id.rawValue, endpoints: endpoints.map(\.description),
                                  labels: info.labels.count <= 64 ? info.labels : [:], lastSeenMicros: min(info.lastSeenUnixMicros, now.wallMicros))
        }
        let added = book.merge(entries, nowMicros: now.wallMicros)
        for id in added where peers[id] == nil {
            var peer = Peer(id: id, name: id.rawValue)
            peer.sources.insert("peer_exchange")
            peers[id] = peer
        }
        // Nodes the link graph names that the book does not (yet): known, without an address.
        for id in topology.firstHops.keys where peers[id] == nil && !retired.contains(id) {
            var peer = Peer(id: id, name: id.rawValue)
            peer.sources.insert("peer_exchange")
            peers[id] = peer
        }
        if !added.isEmpty {
            exchangeDue = true
            planDue = true
            pending.append(.log(.info, "learned \(added.count) peer(s) from \(sender): \(added.map(\.rawValue).joined(separator: ", "))"))
        }
    }

    // MARK: Upkeep

    mutating func upkeep() {
        let instant = now.instant
        for (id, link) in links.sorted(by: { $0.key < $1.key }) {
            if let closing = link.closing {
                if instant - closing.at > options.closeGrace {
                    pending.append(.abort(id, reason: "the peer did not end the link within \(options.closeGrace) of this node's goodbye"))
                    links[id]?.closing = (closing.reason, instant + .seconds(3_600))
                }
                continue
            }
            if checkSilence(id, link) { continue }
            if let expiry = link.info.certificateExpiryUnix, now.wallMicros / 1_000_000 >= expiry {
                let reason = "the certificate of \(link.info.peerID) expired at \(Timestamp.string(unixMicros: expiry * 1_000_000)); a new link needs a renewed one"
                pending.append(.log(.warning, "cutting the link to \(link.info.peerID): \(reason)"))
                stopUsing(id, reason: reason, goodbye: false)
                continue
            }
            // A ping due soon goes out with one due now: one wake-up serves every link.
            if instant >= link.nextPing - options.pingInterval / 2 {
                pending.append(.send(id, ping(at: now)))
                links[id]?.nextPing = instant + options.pingInterval
            }
        }
        if lastBookSave.map({ instant - $0 >= .seconds(1) }) ?? true {
            lastBookSave = instant
            planDue = true
            let keep = Set(peers.values.filter { $0.link != nil || $0.inDiscovery }.map(\.id))
            for id in book.expire(nowMicros: now.wallMicros, keep: keep) where peers[id]?.link == nil && peers[id]?.inDiscovery != true && !topology.isReachable(id) {
                peers.removeValue(forKey: id)
            }
            for id in linkStates.keys where peers[id] == nil {
                linkStates.removeValue(forKey: id)
                topology.reported.removeValue(forKey: id)
            }
            // New or moved peers are saved at once; mere "still alive" refreshes once a minute.
            if book.hasNewMembers || (book.isDirty && lastFullSave.map({ instant - $0 >= .seconds(60) }) ?? true) {
                lastFullSave = instant
                persistBook()
            }
        }
        eachProtocol { $0.tick(context: &$1) }
    }

    // MARK: Failure detection

    /// Half of `peer_timeout`, stretched by local health: silence this long makes a link suspect.
    var suspectAfter: Duration { options.peerTimeout / 2 * (1 + localHealth) }
    /// `peer_timeout`, stretched by local health: silence this long, unrefuted, ends a link.
    var deadAfter: Duration { options.peerTimeout * (1 + localHealth) }

    mutating func clearSuspicion(_ id: LinkID) {
        links[id]!.probedAt = nil
        links[id]!.probesAsked = 0
        links[id]!.vouchedAt = nil
    }

    /// Suspects, probes or cuts a silent link; true when it was cut.
    mutating func checkSilence(_ id: LinkID, _ link: Link) -> Bool {
        let instant = now.instant
        let silence = instant - link.lastReceived
        let peer = link.info.peerID
        if silence > deadAfter {
            // A neighbour that heard the peer within the suspicion window refutes its death, not this link's.
            let vouched = link.vouchedAt.map { instant - $0 < suspectAfter } ?? false
            if !vouched || silence > deadAfter * 3 {
                let reason = vouched
                    ? "nothing from \(peer) for \(silence.inSeconds.fixed(1))s, though a neighbour hears it: this link is dead"
                    : "nothing from \(peer) for \(silence.inSeconds.fixed(1))s (mesh.peer_timeout \(options.peerTimeout)\(localHealth > 0 ? ", stretched ×\(1 + localHealth) by local health" : ""))\(link.probesAsked > 0 ? ", and no neighbour heard from it since" : "")"
                pending.append(.log(.info, reason))
                silenceCuts += 1
                stopUsing(id, reason: reason, goodbye: false)
                return true
            }
        }
        guard silence > suspectAfter, link.probedAt.map({ instant - $0 >= options.pingInterval }) ?? true else { return false }
        let helpers = topology.linkedPeers.filter { $0 != peer && topology.isLinked($0, peer) }.prefix(3)
        if link.probedAt == nil {
            pending.append(.log(.debug, "suspecting \(peer): silent for \(silence.inSeconds.fixed(1))s; asking \(helpers.isEmpty ? "no neighbour (none is linked to it)" : helpers.map(\.rawValue).joined(separator: ", "))"))
        }
        for helper in helpers {
            nextNonce &+= 1
            var request = Envelope()
            request.probeRequest.target = peer.rawValue
            request.probeRequest.nonce = nextNonce
            pending.append(.send(topology.links[helper]!, request))
        }
        pending.append(.send(id, ping(at: now)))
        links[id]!.probedAt = instant
        links[id]!.probesAsked = helpers.count
        return false
    }

    /// Plants a bug for the simulator to find: stalls go unnoticed.
    package mutating func plantStallBlindness() { stallBlind = true }

    /// A tick that comes much later than its deadline means this node was not
    /// running (starved of CPU, stopped, suspended): that time is not the
    /// peers' silence, and for a while this node trusts its timers less.
    mutating func noticeStall() {
        let instant = now.instant
        if !stallBlind, let due = nextDeadline {
            let late = instant - due
            if late > max(.milliseconds(200), options.pingInterval / 4) {
                for id in links.keys where links[id]!.closing == nil {
                    links[id]!.lastReceived = min(instant, links[id]!.lastReceived + late)
                    links[id]!.probedAt = links[id]!.probedAt.map { min(instant, $0 + late) }
                }
                raiseLocalHealth("this node's timer ran \(late.inMilliseconds) ms late (starved of CPU, or stopped)")
            }
        }
        if localHealth > 0, instant - healthChangedAt >= options.peerTimeout {
            localHealth -= 1
            healthChangedAt = instant
        }
    }

    mutating func raiseLocalHealth(_ why: String) {
        guard localHealth < 8 else { return }
        localHealth += 1
        healthChangedAt = now.instant
        pending.append(.log(.info, "local health \(localHealth): \(why); timeouts stretched ×\(1 + localHealth)"))
    }

    mutating func persistBook() {
        guard book.file != nil, book.isDirty else { return }
        pending.append(.persist(book))
        book.markSaved()
    }

    mutating func beginShutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        persistBook()
        for (_, link) in liveLinks() {
            stopUsing(link.info.id, reason: "\(identity.nodeID) is shutting down", goodbye: true)
        }
    }

    /// True once every link has ended (after `shutdown`).
    public var isDrained: Bool { links.isEmpty }

    mutating func computeDeadline() {
        var deadline: MeshInstant?
        var planning: MeshInstant?
        func consider(_ instant: MeshInstant?, plan: Bool = false) {
            guard let instant else { return }
            if deadline == nil || instant < deadline! { deadline = instant }
            if plan, planning == nil || instant < planning! { planning = instant }
        }
        defer { planAt = planning }
        for link in links.values {
            if let closing = link.closing {
                consider(closing.at + options.closeGrace + .milliseconds(1))
            } else {
                consider(link.nextPing)
                consider(link.lastReceived + deadAfter + .milliseconds(1))
                consider(link.probedAt.map { $0 + options.pingInterval } ?? link.lastReceived + suspectAfter + .milliseconds(1))
                // A link becomes prunable at this age (later changes re-plan on their own).
                let prunable = link.connectedAt.instant + Self.pruneDelay
                if options.maxPeers > 0 && prunable > now.instant { consider(prunable, plan: true) }
            }
        }
        if !shuttingDown {
            for peer in peers.values where peer.link == nil && !peer.dialling && peer.nextAttempt > now.instant {
                consider(peer.nextAttempt, plan: true)
            }
            for entry in unidentified.values where entry.answeredBy == nil && !entry.isSelf && !entry.dialling && entry.nextAttempt > now.instant {
                consider(entry.nextAttempt, plan: true)
            }
        }
        consider((lastExchange ?? now.instant) + options.peerExchangeInterval)
        consider((lastBookSave ?? now.instant) + .seconds(1))
        if localHealth > 0 { consider(healthChangedAt + options.peerTimeout) }
        for value in protocols { consider(value.nextDeadline) }
        nextDeadline = deadline.map { max($0, now.instant + .milliseconds(1)) }
    }

    // MARK: Reading

    /// The nodes `neighbour` last reported a direct link to; nil when it has not said.
    public func linkedPeers(of neighbour: NodeID) -> Set<NodeID>? { topology.reported[neighbour] }

    /// Every node this node knows of (linked, discovered, in the book, in the link graph), itself excluded.
    public var knownPeerIDs: Set<NodeID> { Set(peers.keys) }

    /// What `id`'s probes last said.
    public func reachability(of id: NodeID) -> PeerReachability? { reachability[id] }

    /// The peer a live link goes to.
    public func peer(of link: LinkID) -> NodeID? { links[link]?.info.peerID }

    /// Every peer as the status shows it; `counters` gives a link's sent/received counts when the runner has them.
    public func status(at now: MeshNow, counters: (LinkID) -> (received: UInt64, sent: UInt64)?) -> [PeerStatus] {
        peers.values.sorted { $0.id < $1.id }.map { peer in
            // A link that is closing no longer carries traffic: the peer shows as not connected.
            let link = peer.link.flatMap { links[$0] }.flatMap { $0.closing == nil ? $0 : nil }
            let state: PeerStatus.State
            if link != nil {
                state = .connected
            } else if peer.dialling {
                state = .connecting
            } else if peer.failures > 0 && peer.nextAttempt > now.instant {
                state = .backoff
            } else {
                state = .idle
            }
            let wait = peer.nextAttempt > now.instant ? peer.nextAttempt - now.instant : .zero
            let count = link.flatMap { counters($0.info.id) }
            return PeerStatus(
                nodeID: peer.id.rawValue, name: peer.name, state: state, direct: link != nil,
                transport: link?.info.transport ?? endpoints(for: peer.id).first?.transport ?? offeredTransports(of: peer.id).first ?? identity.transport,
                direction: link?.info.direction, remoteAddress: link?.info.remoteAddress,
                endpoints: endpoints(for: peer.id).map(\.description),
                rttMilliseconds: link?.roundTrip?.inMilliseconds,
                connectedSince: link.map { Timestamp.string(unixMicros: $0.connectedAt.wallMicros) },
                lastConnected: peer.lastConnectedMicros.map { Timestamp.string(unixMicros: $0) },
                lastDisconnected: peer.lastDisconnectedMicros.map { Timestamp.string(unixMicros: $0) },
                lastError: peer.lastError, failures: peer.failures,
                nextAttemptInMilliseconds: state == .backoff ? Int(wait.inMilliseconds) : nil,
                messagesReceived: count?.received ?? link?.received, messagesSent: count?.sent,
                sources: peer.sources.sorted(), labels: peer.labels, reachability: reachability[peer.id])
        }
    }
}
