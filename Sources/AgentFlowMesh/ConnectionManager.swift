import AgentFlowCore
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging

/// The mesh's bookkeeping: every known peer, its link or why it has none,
/// when to dial it next, and the peer book. An actor: link tasks, the
/// discovery follower and the maintenance loop all report here.
///
/// Rules it keeps:
/// - one link per pair: a second link to the same peer is resolved by
///   `resolveDuplicate` identically on both ends;
/// - discovery adds peers and refreshes their addresses, but never tears a
///   live link down, except an authoritative list (a peers file) that
///   removes a peer on purpose;
/// - failed dials back off exponentially with jitter; each attempt uses the
///   freshest addresses (discovery first, then what the peer advertised, then
///   the book), rotating through them as failures mount.
actor ConnectionManager {
    struct Peer {
        var id: NodeID
        var name: String
        var discovered: [DiscoveredEndpoint] = []
        var labels: [String: String] = [:]
        var inDiscovery = false
        var link: PeerLink?
        var dialling = false
        var failures = 0
        var nextAttempt = ContinuousClock.now
        var lastError: String?
        var lastConnectedAt: Date?
        var lastDisconnectedAt: Date?
        var sources: Set<String> = []
    }

    /// A dial the maintenance loop should start.
    struct DialPlan: Sendable {
        /// Who should answer; nil for an address discovery found without an id.
        var peer: NodeID?
        var endpoint: DiscoveredEndpoint
    }

    /// An address discovery reported without a node id (`PeerSetUpdate.unidentified`).
    struct Unidentified {
        /// Who answered there; nil until a dial told.
        var answeredBy: NodeID?
        /// The address led back to this node: never dialled again.
        var isSelf = false
        var dialling = false
        var failures = 0
        var nextAttempt = ContinuousClock.now
    }

    enum Admission {
        case admitted(displaced: PeerLink?)
        case refused(String)
    }

    private(set) var identity: LocalIdentity
    let options: MeshOptions
    let logger: Logger
    private var peers: [NodeID: Peer] = [:]
    private var book: PeerBook
    /// Peers an authoritative list removed: not dialled, not accepted, ignored in exchanges.
    private var retired: Set<NodeID> = []
    private(set) var discoveryHealth: PeerSetUpdate.Health?
    private(set) var discoveryUpdates = 0
    private var shuttingDown = false
    private var exchangeDue = false
    private var lastExchange = ContinuousClock.now
    private var lastBookSave = ContinuousClock.now
    private var lastFullSave = ContinuousClock.now
    private var dialFailures = 0
    /// What each neighbour last said it is directly linked to (from its own PeerExchange entry).
    private var neighbourLinks: [NodeID: Set<NodeID>] = [:]
    private var linksEstablished = 0
    private var unidentified: [DiscoveredEndpoint: Unidentified] = [:]
    /// What each node's probes found (its own, or passed on by peers): the newest per node.
    private var reachability: [NodeID: PeerReachability] = [:]
    /// This node's own, from its probes.
    private(set) var ownReachability: PeerReachability?

    init(identity: LocalIdentity, options: MeshOptions, logger: Logger) {
        self.identity = identity
        self.options = options
        self.logger = logger
        var book = PeerBook(file: options.peerBookFile, maxAge: options.peerBookMaxAge)
        do {
            try book.load()
        } catch {
            logger.warning("\(error)")
        }
        let stale = book.expire(nowMicros: unixMicros(), keep: [])
        if !stale.isEmpty { logger.info("peer book: forgot \(stale.count) peer(s) not seen for \(options.peerBookMaxAge)") }
        book.remove(identity.nodeID)
        self.book = book
        for entry in book.entries.values {
            var peer = Peer(id: entry.nodeID, name: entry.name)
            peer.labels = entry.labels
            peer.sources.insert("peer_book")
            peers[entry.nodeID] = peer
        }
        if !book.entries.isEmpty { logger.info("peer book: \(book.entries.count) known peer(s) from \(options.peerBookFile ?? "memory")") }
    }

    func setAdvertised(_ endpoints: [DiscoveredEndpoint]) {
        identity.advertised = endpoints
    }

    /// This node's probe results: told to every link at the next exchange (now).
    func setReachability(_ value: PeerReachability) {
        let changed = ownReachability.map { ($0.dialable, $0.publicAddress, $0.mapping, $0.filtering) != (value.dialable, value.publicAddress, value.mapping, value.filtering) } ?? true
        ownReachability = value
        if changed { exchangeDue = true }
    }

    /// What `id`'s probes last said; nil when nothing was heard.
    func reachability(of id: NodeID) -> PeerReachability? { reachability[id] }

    /// True when this node leaves the dialling of `id` to `id`: its dial-back
    /// failed, and this node is reachable from outside (or has not probed), so
    /// it is not on the inside of `id`'s network with it. Two nodes that are
    /// both not dialable still try each other: they may share a LAN.
    private func leavesDialling(to id: NodeID) -> Bool {
        reachability[id]?.dialable == .no && ownReachability?.dialable != .no
    }

    // MARK: Discovery

    func applyDiscovery(_ update: PeerSetUpdate) {
        discoveryHealth = update.health
        discoveryUpdates += 1
        let now = unixMicros()
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
                peer.nextAttempt = .now
            }
            peers[found.nodeID] = peer
            if book.record(found.nodeID, name: found.displayName, endpoints: found.endpoints, labels: found.labels, seenAtMicros: now) {
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

    private func retire(_ id: NodeID, reason: String) {
        logger.info("peer \(id): \(reason); closing its link and forgetting it")
        retired.insert(id)
        peers[id]?.link?.close(reason: reason)
        peers.removeValue(forKey: id)
        book.remove(id)
    }

    // MARK: Dialling

    /// The addresses to try for `peer`: on the first transport in this node's
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
    private func knownEndpoints(of id: NodeID) -> [DiscoveredEndpoint] {
        (peers[id]?.discovered ?? []) + (peers[id]?.link?.advertised ?? []) + (book.entries[id]?.discoveredEndpoints ?? [])
    }

    /// Every transport `id` is known to offer, whichever this node speaks.
    private func offeredTransports(of id: NodeID) -> [String] {
        Array(Set(knownEndpoints(of: id).map(\.transport))).sorted()
    }

    /// Records who answered at an address discovery gave without an id.
    func identified(_ endpoint: DiscoveredEndpoint, as id: NodeID) {
        guard var entry = unidentified[endpoint] else { return }
        entry.answeredBy = id
        entry.dialling = false
        entry.failures = 0
        unidentified[endpoint] = entry
        var peer = peers[id] ?? Peer(id: id, name: id.rawValue)
        if !peer.discovered.contains(endpoint) { peer.discovered.append(endpoint) }
        peer.inDiscovery = true
        peer.sources.insert("discovery")
        peers[id] = peer
        logger.info("\(endpoint) is \(id)")
    }

    /// Dials to learn who listens at addresses discovery found without an id.
    private func planUnidentified(now: ContinuousClock.Instant) -> [DialPlan] {
        guard unidentified.values.contains(where: { $0.answeredBy == nil && !$0.isSelf }) else { return [] }
        // An address some known peer already offers needs no dial to be told apart.
        let known = Set(peers.keys.flatMap { endpoints(for: $0) })
        var plans: [DialPlan] = []
        for (endpoint, var entry) in unidentified.sorted(by: { $0.key.description < $1.key.description }) {
            guard entry.answeredBy == nil, !entry.isSelf, !entry.dialling, now >= entry.nextAttempt, !known.contains(endpoint) else { continue }
            entry.dialling = true
            unidentified[endpoint] = entry
            plans.append(DialPlan(peer: nil, endpoint: endpoint))
        }
        return plans
    }

    /// The members whose preferred peers include this node (under `max_peers`),
    /// memoised per membership: the ring's other half of "either end prefers it".
    private var preferringCache: (members: Set<NodeID>, result: Set<NodeID>)?
    private func preferringThisNode(_ members: Set<NodeID>) -> Set<NodeID> {
        guard options.maxPeers > 0 else { return members.subtracting([identity.nodeID]) }
        if let cached = preferringCache, cached.members == members { return cached.result }
        let result = Set(members.filter { $0 != identity.nodeID && MeshTopology.preferredPeers(of: $0, among: members, maxPeers: options.maxPeers).contains(identity.nodeID) })
        preferringCache = (members, result)
        return result
    }

    /// Peers the topology wants linked, given everything this node knows.
    private func members() -> Set<NodeID> {
        Set(peers.keys).subtracting(retired).union([identity.nodeID])
    }

    /// Dials to start now, and links the topology no longer wants closed.
    func plan() -> [DialPlan] {
        guard !shuttingDown else { return [] }
        let now = ContinuousClock.now
        let members = members()
        var wanted = MeshTopology.preferredPeers(of: identity.nodeID, among: members, maxPeers: options.maxPeers)
        if ownReachability?.dialable == .no {
            // Peers outside leave the dialling to this node: it also dials those that prefer it.
            wanted.formUnion(preferringThisNode(members))
        }
        var plans: [DialPlan] = []
        for id in wanted.sorted() {
            guard var peer = peers[id], peer.link == nil, !peer.dialling, now >= peer.nextAttempt else { continue }
            if leavesDialling(to: id) {
                peer.lastError = "not dialable from outside (its reach probe); it dials this node"
                peer.nextAttempt = now + .seconds(1)
                peers[id] = peer
                continue
            }
            let candidates = endpoints(for: id)
            guard !candidates.isEmpty else {
                let offered = offeredTransports(of: id)
                peer.lastError = offered.isEmpty
                    ? "no endpoint known for this peer"
                    : "it offers only \(offered.joined(separator: ", ")); this node speaks \(identity.transports.joined(separator: ", ")) (it is reached through a relay)"
                peer.nextAttempt = now + .seconds(1)
                peers[id] = peer
                continue
            }
            peer.dialling = true
            peers[id] = peer
            plans.append(DialPlan(peer: id, endpoint: candidates[peer.failures % candidates.count]))
        }
        plans += planUnidentified(now: now)
        if options.maxPeers > 0 {
            for (id, peer) in peers {
                guard let link = peer.link, link.closeReason == nil, now - link.connectedInstant > .seconds(5),
                      !MeshTopology.keepsLink(identity.nodeID, id, members: members, maxPeers: options.maxPeers) else { continue }
                link.close(reason: "mesh.max_peers = \(options.maxPeers): neither end prefers this link")
            }
        }
        return plans
    }

    func dialFailed(_ plan: DialPlan, error: any Error) {
        dialFailures += 1
        guard let id = plan.peer else {
            unidentifiedDialFailed(plan.endpoint, error: error)
            return
        }
        guard var peer = peers[id] else { return }
        peer.dialling = false
        peer.failures += 1
        let delay = options.backoff.delay(afterFailures: peer.failures)
        peer.nextAttempt = .now + delay
        peer.lastError = "dial \(plan.endpoint): \(error)"
        peers[id] = peer
        let attempts = peer.failures
        logger.log(level: attempts <= 1 || attempts % 10 == 0 ? .info : .debug,
                   "cannot reach \(id) at \(plan.endpoint) (attempt \(attempts)): \(error); next try in \(delay)")
    }

    private func unidentifiedDialFailed(_ endpoint: DiscoveredEndpoint, error: any Error) {
        guard var entry = unidentified[endpoint] else { return }
        entry.dialling = false
        if let meshError = error as? MeshError, meshError.kind == .selfConnection {
            entry.isSelf = true
            unidentified[endpoint] = entry
            logger.debug("\(endpoint) is this node itself; not dialling it again")
            return
        }
        entry.failures += 1
        let delay = options.backoff.delay(afterFailures: entry.failures)
        entry.nextAttempt = .now + delay
        unidentified[endpoint] = entry
        logger.log(level: entry.failures <= 1 || entry.failures % 10 == 0 ? .info : .debug,
                   "cannot reach \(endpoint), found by discovery (attempt \(entry.failures)): \(error); next try in \(delay)")
    }

    // MARK: Links

    /// Decides whether a link whose `Hello` checked out may live.
    func admit(_ link: PeerLink) -> Admission {
        let id = link.peerID
        if link.direction == .outbound { peers[id]?.dialling = false }
        if shuttingDown { return .refused("this node is shutting down") }
        if retired.contains(id) { return .refused("\(identity.nodeID) does not list \(id) in its peers file") }
        var peer = peers[id] ?? Peer(id: id, name: link.peerName)
        var displaced: PeerLink?
        if let existing = peer.link {
            if resolveDuplicate(existing: existing, new: link) {
                displaced = existing
            } else {
                return .refused("a link between \(identity.nodeID) and \(id) already exists")
            }
        }
        peer.link = link
        peer.name = link.peerName
        peer.labels = link.labels
        // `failures` is cleared only once a link has proved itself (see linkEnded): a
        // peer that admits us and then says goodbye at once must still back off.
        peer.lastError = nil
        peer.lastConnectedAt = link.connectedAt
        peer.sources.insert(link.direction == .inbound ? "inbound" : "dialled")
        peers[id] = peer
        linksEstablished += 1
        exchangeDue = true  // neighbours learn our links at once (relays route by them)
        if book.record(id, name: link.peerName, endpoints: link.advertised, labels: link.labels, seenAtMicros: unixMicros()) {
            exchangeDue = true
        }
        return .admitted(displaced: displaced)
    }

    /// True when `new` should replace `existing` (both to the same peer).
    /// A newer run of the peer wins (the old link is a dead one from before
    /// its restart); between two links of the same run — both nodes dialled at
    /// once — the one dialled by the smaller node id wins; a second link dialled
    /// by the same side replaces the first (which that side has given up on).
    func resolveDuplicate(existing: PeerLink, new: PeerLink) -> Bool {
        if existing.peerIncarnation != new.peerIncarnation { return new.peerIncarnation > existing.peerIncarnation }
        if existing.direction != new.direction {
            let dialler = MeshTopology.survivingDialler(identity.nodeID, new.peerID)
            let newDialler = new.direction == .outbound ? identity.nodeID : new.peerID
            return newDialler == dialler
        }
        return true
    }

    func linkEnded(_ link: PeerLink, error: (any Error)?) {
        guard var peer = peers[link.peerID], peer.link === link else { return }
        peer.link = nil
        exchangeDue = true
        neighbourLinks.removeValue(forKey: link.peerID)
        peer.lastDisconnectedAt = Date()
        let lived = (ContinuousClock.now - link.connectedInstant).inSeconds
        if let goodbye = link.goodbyeReceived {
            peer.lastError = "the peer said goodbye: \(goodbye)"
        } else if let reason = link.closeReason {
            peer.lastError = "closed by this node: \(reason)"
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
        let delay = peer.failures == 0 ? .milliseconds(Int64.random(in: 50...300)) : options.backoff.delay(afterFailures: peer.failures)
        peer.nextAttempt = .now + delay
        peers[link.peerID] = peer
        book.record(link.peerID, name: nil, endpoints: [], labels: nil, seenAtMicros: unixMicros())
        logger.info("link to \(link.peerID) ended after \(lived.fixed(1))s: \(peer.lastError ?? "")")
    }

    var liveLinks: [PeerLink] { peers.values.compactMap(\.link).sorted { $0.peerID < $1.peerID } }

    /// The nodes `neighbour` last reported a direct link to; nil when it has not said.
    func linkedPeers(of neighbour: NodeID) -> Set<NodeID>? { neighbourLinks[neighbour] }

    /// Every node this node knows of (linked, discovered, in the book), itself excluded.
    var knownPeerIDs: Set<NodeID> { Set(peers.keys) }

    // MARK: Peer exchange

    /// What this node tells its peers it knows: the book, with live links refreshed.
    func peerExchange() -> Envelope {
        let now = unixMicros()
        for link in liveLinks { book.record(link.peerID, name: nil, endpoints: [], labels: nil, seenAtMicros: now) }
        var exchange = Agentflow_Mesh_V1_PeerExchange()
        var me = Agentflow_Mesh_V1_PeerInfo()
        me.nodeID = identity.nodeID.rawValue
        me.endpoints = identity.advertised.map(\.wire)
        me.lastSeenUnixMicros = now
        me.labels = identity.labels
        me.linkedPeers = liveLinks.map(\.peerID.rawValue)
        if let ownReachability { me.reachability = ownReachability.wire }
        exchange.peers.append(me)
        for entry in book.entries.values.sorted(by: { $0.lastSeenMicros > $1.lastSeenMicros }).prefix(1_000) {
            var info = Agentflow_Mesh_V1_PeerInfo()
            info.nodeID = entry.nodeID.rawValue
            info.endpoints = entry.discoveredEndpoints.map(\.wire)
            info.lastSeenUnixMicros = entry.lastSeenMicros
            info.labels = entry.labels
            if let known = reachability[entry.nodeID] { info.reachability = known.wire }
            exchange.peers.append(info)
        }
        var envelope = Envelope()
        envelope.peerExchange = exchange
        return envelope
    }

    /// Folds a peer's `PeerExchange` into the book. Returns how many peers were new.
    @discardableResult
    func learn(_ exchange: Agentflow_Mesh_V1_PeerExchange, from link: PeerLink) -> Int {
        let now = unixMicros()
        if let own = exchange.peers.first(where: { $0.nodeID == link.peerID.rawValue }) {
            neighbourLinks[link.peerID] = Set(own.linkedPeers.prefix(10_000).compactMap { NodeID($0) })
        }
        for info in exchange.peers.prefix(2_000) where info.hasReachability {
            guard let id = NodeID(info.nodeID), id != identity.nodeID, let heard = PeerReachability(wire: info.reachability) else { continue }
            // The node's own word is newest; a clock ahead of ours counts as now.
            var value = heard
            value.checkedAtMicros = min(value.checkedAtMicros, now)
            if let known = reachability[id], known.checkedAtMicros >= value.checkedAtMicros { continue }
            if reachability[id]?.dialable != value.dialable {
                logger.info("\(id) says it is \(value.dialable == .no ? "not " : "")dialable from outside\(value.dialable == .no ? ": it dials out; this node leaves the dialling to it" : "")")
            }
            reachability[id] = value
        }
        let entries: [PeerBook.Entry] = exchange.peers.prefix(2_000).compactMap { info in
            guard let id = NodeID(info.nodeID), id != identity.nodeID, !retired.contains(id) else { return nil }
            let endpoints = info.endpoints.prefix(16).compactMap(DiscoveredEndpoint.init(wire:))
            guard !endpoints.isEmpty else { return nil }
            // Nobody vouches for the future: a clock ahead of ours counts as now.
            return PeerBook.Entry(nodeID: id, name: id.rawValue, endpoints: endpoints.map(\.description),
                                  labels: info.labels.count <= 64 ? info.labels : [:], lastSeenMicros: min(info.lastSeenUnixMicros, now))
        }
        let added = book.merge(entries, nowMicros: now)
        for id in added where peers[id] == nil {
            var peer = Peer(id: id, name: id.rawValue)
            peer.sources.insert("peer_exchange")
            peers[id] = peer
        }
        if !added.isEmpty {
            exchangeDue = true
            logger.info("learned \(added.count) peer(s) from \(link.peerID): \(added.map(\.rawValue).joined(separator: ", "))")
        }
        return added.count
    }

    /// True when the links should hear this node's peers now (something new, or the interval passed).
    func takeExchangeDue() -> Bool {
        let now = ContinuousClock.now
        guard exchangeDue || now - lastExchange >= options.peerExchangeInterval else { return false }
        exchangeDue = false
        lastExchange = now
        return true
    }

    // MARK: Upkeep

    /// Ages the book out and saves it (at most once a second).
    func upkeep() {
        let now = ContinuousClock.now
        guard now - lastBookSave >= .seconds(1) else { return }
        lastBookSave = now
        let keep = Set(peers.values.filter { $0.link != nil || $0.inDiscovery }.map(\.id))
        for id in book.expire(nowMicros: unixMicros(), keep: keep) where peers[id]?.link == nil && peers[id]?.inDiscovery != true {
            peers.removeValue(forKey: id)
        }
        // New or moved peers are saved at once; mere "still alive" refreshes once a minute.
        if book.hasNewMembers || (book.isDirty && now - lastFullSave >= .seconds(60)) {
            lastFullSave = now
            saveBook()
        }
    }

    func saveBook() {
        do {
            try book.save()
        } catch {
            logger.warning("cannot save the peer book: \(error)")
        }
    }

    func beginShutdown() -> [PeerLink] {
        shuttingDown = true
        saveBook()
        return liveLinks
    }

    // MARK: Status

    func status() -> [PeerStatus] {
        let now = ContinuousClock.now
        return peers.values.sorted { $0.id < $1.id }.map { peer in
            let state: PeerStatus.State
            if peer.link != nil {
                state = .connected
            } else if peer.dialling {
                state = .connecting
            } else if peer.failures > 0 && peer.nextAttempt > now {
                state = .backoff
            } else {
                state = .idle
            }
            let link = peer.link
            let wait = peer.nextAttempt > now ? peer.nextAttempt - now : .zero
            return PeerStatus(
                nodeID: peer.id.rawValue, name: peer.name, state: state, direct: link != nil,
                transport: link?.transport ?? endpoints(for: peer.id).first?.transport ?? offeredTransports(of: peer.id).first ?? identity.transport,
                direction: link?.direction, remoteAddress: link?.remoteAddress,
                endpoints: endpoints(for: peer.id).map(\.description),
                rttMilliseconds: link?.roundTrip?.inMilliseconds,
                connectedSince: link.map { Timestamp.string($0.connectedAt) },
                lastConnected: peer.lastConnectedAt.map(Timestamp.string), lastDisconnected: peer.lastDisconnectedAt.map(Timestamp.string),
                lastError: peer.lastError, failures: peer.failures,
                nextAttemptInMilliseconds: state == .backoff ? Int(wait.inMilliseconds) : nil,
                messagesReceived: link?.counters.received, messagesSent: link?.counters.sent,
                sources: peer.sources.sorted(), labels: peer.labels, reachability: reachability[peer.id])
        }
    }

    var counters: (dialFailures: Int, linksEstablished: Int) { (dialFailures, linksEstablished) }
}
