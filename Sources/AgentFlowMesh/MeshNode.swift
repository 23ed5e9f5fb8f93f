public import AgentFlowCore
import AgentFlowProto
public import Logging
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// What the layer above the mesh does with the effects its protocols ask for
/// (`MeshContext.effect`): deliver an update to subscribers, run a command's
/// action. Called in order under the node's lock: it must not block. Work
/// that waits goes to `node.spawn`.
public protocol MeshEffects: Sendable {
    func perform(_ effect: any Sendable, node: MeshNode)
}

/// A master's place in the mesh: the runner of its `MeshState`.
///
/// It listens on each transport, follows the discovery backend, dials what
/// the state asks for, serves each link (the `Hello` exchange, then a reader
/// and a writer), and feeds the state every input with the time it happens
/// at. The state is behind one lock, and the actions of an input are
/// performed under it in order, so what the state decides in one step (a
/// sequence number and the sends that carry it) reaches every link in that
/// order. Timers are the state's deadlines; nothing polls. Every task it
/// starts belongs to `run()`'s task group.
///
/// ```swift
/// let node = MeshNode(identity: identity, transports: [grpc, tcp], discovery: discovery, options: options)
/// try await node.run()          // until shutdown() or cancellation
/// ```
public final class MeshNode: Sendable {
    /// The node's transports, in its order of preference.
    public let transports: [any Transport]
    public let discovery: (any Discovery)?
    public let options: MeshOptions
    let logger: Logger
    let advertise: @Sendable (DiscoveredEndpoint) -> [DiscoveredEndpoint]
    let effects: (any MeshEffects)?
    let usesTLS: Bool
    let startedAt = Date()
    let clockOrigin = ContinuousClock.now

    struct Core {
        var state: MeshState
        /// Admitted links' I/O handles.
        var handles: [LinkID: PeerLink] = [:]
        /// Links whose `linkUp` was refused, with why.
        var refused: [LinkID: String] = [:]
        var nextLinkID: UInt64 = 1
        var droppedSends: UInt64 = 0
        /// The deadline the timer sleeps toward.
        var timerDeadline: MeshInstant?
        var bookToSave: PeerBook?
    }

    struct Extras {
        var listening: [DiscoveredEndpoint] = []
        var discoveryFailure: String?
        var probeReports: [ProbeReport] = []
        var certificate: (file: String, notAfterUnix: Int64)?
        var shutDown = false
        var running = false
    }

    let core: Mutex<Core>
    private let extras = Mutex(Extras())
    /// Work for `run()`'s task group: dials, link refusals, command actions, book saves.
    private let work: AsyncStream<@Sendable () async -> Void>.Continuation
    private let workStream: AsyncStream<@Sendable () async -> Void>
    /// Raised when the state's deadline moved earlier than the timer's.
    private let wake = Wakeup()
    /// Raised by `shutdown()`.
    private let stopping = Wakeup()
    /// Raised when discovery must stop (a signal backend then deregisters).
    private let discoveryStop = Wakeup()
    /// Raised once discovery has stopped.
    private let discoveryStopped = Wakeup()
    private let saving = Mutex(())

    /// - Parameters:
    ///   - identity: who this node says it is in every `Hello`.
    ///   - transports: one per name in `identity.transports`, in the same order.
    ///   - discovery: where peers come from; nil for a node that only accepts links.
    ///   - options: timings, topology (`max_peers`) and the peer book's file.
    ///   - protocols: what runs over the links besides the mesh's own traffic (cluster state, commands).
    ///   - effects: performs what the protocols ask of the application.
    ///   - usesTLS: whether the links are mutually authenticated (shown in the status).
    ///   - logger: the node's logger.
    ///   - advertise: the endpoints to announce, given the endpoint a
    ///     transport actually bound (a wildcard host or port 0 resolved by the caller).
    public init(identity: LocalIdentity, transports: [any Transport], discovery: (any Discovery)?, options: MeshOptions,
                protocols: [any MeshProtocol] = [], effects: (any MeshEffects)? = nil, usesTLS: Bool = true,
                logger: Logger = Logger(label: "agentflow.mesh"),
                advertise: @escaping @Sendable (DiscoveredEndpoint) -> [DiscoveredEndpoint] = { [$0] }) {
        precondition(transports.map(\.name) == identity.transports, "transports \(transports.map(\.name)) differ from the identity's \(identity.transports)")
        self.transports = transports
        self.discovery = discovery
        self.options = options
        self.effects = effects
        self.logger = logger
        self.advertise = advertise
        self.usesTLS = usesTLS
        var book = PeerBook(file: options.peerBookFile, maxAge: options.peerBookMaxAge)
        do {
            try book.load()
        } catch {
            logger.warning("\(error)")
        }
        let now = MeshNow(instant: .zero, wallMicros: unixMicros())
        var state = MeshState(identity: identity, options: options, book: book, protocols: protocols, seed: UInt64.random(in: 0...UInt64.max), now: now)
        let initial = state.handle(.tick, at: now)
        core = Mutex(Core(state: state))
        (workStream, work) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
        core.withLock { perform(initial, in: &$0) }
    }

    /// A node with one transport.
    public convenience init(identity: LocalIdentity, transport: any Transport, discovery: (any Discovery)?, options: MeshOptions,
                            protocols: [any MeshProtocol] = [], effects: (any MeshEffects)? = nil, usesTLS: Bool = true,
                            logger: Logger = Logger(label: "agentflow.mesh"),
                            advertise: @escaping @Sendable (HostPort) -> [HostPort] = { [$0] }) {
        self.init(identity: identity, transports: [transport], discovery: discovery, options: options, protocols: protocols, effects: effects,
                  usesTLS: usesTLS, logger: logger,
                  advertise: { bound in advertise(bound.address).map { DiscoveredEndpoint(transport: bound.transport, address: $0) } })
    }

    /// The preferred transport.
    public var transport: any Transport { transports[0] }

    // MARK: Feeding the state

    /// The time now, on the state's clock.
    public func now() -> MeshNow {
        MeshNow(instant: MeshInstant(nanoseconds: (ContinuousClock.now - clockOrigin).nanosecondsClamped), wallMicros: unixMicros())
    }

    /// Hands the state one input and performs what it asks, in order.
    public func feed(_ input: MeshInput) {
        core.withLock { core in
            let actions = core.state.handle(input, at: now())
            perform(actions, in: &core)
        }
    }

    /// Runs `body` on the registered protocol `P` (for example, to publish an
    /// event) and performs the actions it adds, in the same step.
    public func withProtocol<P: MeshProtocol, R: Sendable>(_ type: P.Type, _ body: (inout P, inout MeshContext) -> R) -> R? {
        core.withLock { core in
            guard let (result, actions) = core.state.withProtocol(type, at: now(), body) else { return nil }
            perform(actions, in: &core)
            return result
        }
    }

    /// Reads the registered protocol `P`.
    public func read<P: MeshProtocol, R: Sendable>(_ type: P.Type, _ body: (P) -> R) -> R? {
        core.withLock { $0.state.read(type, body) }
    }

    /// Reads the state (the link graph, known peers).
    public func read<R: Sendable>(_ body: (MeshState) -> R) -> R {
        core.withLock { body($0.state) }
    }

    /// Runs `body` in `run()`'s task group (the caller does not wait).
    public func spawn(_ body: @escaping @Sendable () async -> Void) {
        work.yield(body)
    }

    private func perform(_ actions: [MeshAction], in core: inout Core) {
        for action in actions {
            switch action {
            case .dial(let plan):
                work.yield { await self.dial(plan) }
            case .accept:
                break  // serve() reads the admission from `handles`
            case .refuse(let id, let reason):
                core.refused[id] = reason
            case .send(let id, let envelope):
                if core.handles[id]?.trySend(envelope) != true { core.droppedSends += 1 }
            case .sendInOrder(let id, let envelope):
                core.handles[id]?.sendInOrder(envelope)
            case .close(let id, let reason):
                core.handles[id]?.close(reason: reason)
            case .abort(let id, let reason):
                if let handle = core.handles[id] {
                    logger.debug("cutting the link to \(handle.peerID): \(reason)")
                    handle.abort()
                }
            case .persist(let book):
                core.bookToSave = book
                work.yield { self.saveBook() }
            case .log(let level, let message):
                logger.log(level: level, "\(message)")
            case .effect(let value):
                effects?.perform(value, node: self)
            }
        }
        let deadline = core.state.nextDeadline
        if let deadline, core.timerDeadline.map({ deadline < $0 }) ?? true {
            core.timerDeadline = deadline
            wake.raise()
        }
    }

    private func saveBook() {
        saving.withLock { _ in
            guard var book = core.withLock({ core -> PeerBook? in
                defer { core.bookToSave = nil }
                return core.bookToSave
            }) else { return }
            do {
                try book.save()
            } catch {
                logger.warning("cannot save the peer book: \(error)")
            }
        }
    }

    // MARK: Running

    /// Runs the node until `shutdown()` (graceful: Goodbye on every link,
    /// deregistration) or cancellation (abrupt). Throws when the transport cannot listen.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for transport in transports {
                group.addTask {
                    try await transport.listen { stream in
                        await self.serve(stream, direction: .inbound, plan: nil)
                    }
                }
            }
            var bound: [DiscoveredEndpoint] = []
            for transport in transports {
                bound.append(DiscoveredEndpoint(transport: transport.name, address: try await transport.listeningAddress()))
            }
            let identity = read { $0.identity }
            let advertised = bound.flatMap(advertise)
            extras.withLock { $0.listening = bound }
            feed(.started(advertised: advertised))
            logger.info("mesh node \(identity.nodeID) up: \(bound.map(\.description).joined(separator: ", ")), advertising \(advertised.map(\.description).joined(separator: ", ")); max_peers \(options.maxPeers == 0 ? "0 (full mesh)" : String(options.maxPeers))")
            let announcement = LocalAnnouncement(nodeID: identity.nodeID, displayName: identity.displayName, endpoints: advertised, labels: identity.labels)
            group.addTask {
                // Its own group, so a shutdown can stop discovery first and wait for it.
                await withDiscardingTaskGroup { discovery in
                    discovery.addTask { await self.followDiscovery(announcement) }
                    await self.discoveryStop.wait()
                    discovery.cancelAll()
                }
                self.discoveryStopped.raise()
            }
            group.addTask { await self.runTimer() }
            group.addTask {
                // Work the state and the effects ask for, owned by this group.
                await withDiscardingTaskGroup { workers in
                    for await item in self.workStream { workers.addTask { await item() } }
                }
            }
            await waitForShutdown()
            await drainOnShutdown()
            group.cancelAll()
        }
    }

    /// Starts a graceful shutdown: stop dialling, say Goodbye on every link,
    /// stop discovery (a signal backend deregisters), stop the transport.
    /// `run` returns once links have ended (bounded by `closeGrace`).
    public func shutdown() {
        extras.withLock { $0.shutDown = true }
        stopping.raise()
    }

    private var isShutDown: Bool { extras.withLock { $0.shutDown } }

    private func waitForShutdown() async {
        if !isShutDown { await stopping.wait() }
    }

    private func drainOnShutdown() async {
        if Task.isCancelled {
            // Cancelled rather than shut down: links are cut with their tasks.
            for transport in transports { transport.beginGracefulShutdown() }
            return
        }
        // Discovery first (a signal backend deregisters, so peers stop seeing this node at once), then the links.
        discoveryStop.raise()
        if discovery != nil { await discoveryStopped.wait() }
        feed(.shutdown)
        // Links end once peers answer our Goodbye, or after closeGrace; then stop the transport.
        let deadline = ContinuousClock.now + options.closeGrace + .milliseconds(500)
        while ContinuousClock.now < deadline, !read({ $0.isDrained }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for transport in transports { transport.beginGracefulShutdown() }
    }

    /// Sleeps until the state's next deadline (or an earlier one), then ticks.
    private func runTimer() async {
        while !Task.isCancelled {
            let deadline = core.withLock { core -> MeshInstant? in
                core.timerDeadline = core.state.nextDeadline
                return core.timerDeadline
            }
            let wait = deadline.map { $0 - now().instant } ?? .seconds(3_600)
            if wait > .zero {
                let woken = await withTaskGroup(of: Bool.self) { group -> Bool in
                    group.addTask {
                        try? await Task.sleep(for: wait)
                        return false
                    }
                    group.addTask {
                        await self.wake.wait()
                        return true
                    }
                    let first = await group.next() ?? false
                    group.cancelAll()
                    return first
                }
                if Task.isCancelled { return }
                if woken { continue }
            }
            feed(.tick)
        }
    }

    private func followDiscovery(_ announcement: LocalAnnouncement) async {
        guard let discovery else { return }
        do {
            for try await update in discovery.peerSets(announcing: announcement) {
                if isShutDown { break }
                feed(.discovered(update))
                if case .degraded(let reason) = update.health {
                    logger.debug("discovery \(discovery.name) degraded: \(reason); keeping \(update.peers.count) known peer(s)")
                }
            }
        } catch is CancellationError {
        } catch {
            extras.withLock { $0.discoveryFailure = "\(error)" }
            logger.error("discovery \(discovery.name) stopped: \(error). Live links and the peer book keep the mesh; fix the cause and restart.")
        }
    }

    // MARK: Links

    private func dial(_ plan: DialPlan) async {
        let stream: MeshStream
        do {
            guard let transport = transports.first(where: { $0.name == plan.endpoint.transport }) else {
                throw MeshError(.refused, "this node does not speak \(plan.endpoint.transport)")
            }
            stream = try await transport.connect(to: plan.endpoint.address, expectedPeer: plan.peer)
        } catch {
            feed(.dialFailed(plan, reason: "\(error)", selfConnection: (error as? MeshError)?.kind == .selfConnection))
            return
        }
        await withTaskExecutorPreference(stream.executor) {
            await serve(stream, direction: .outbound, plan: plan)
        }
    }

    /// Serves one link from the Hello exchange to its end.
    func serve(_ stream: MeshStream, direction: LinkDirection, plan: DialPlan?) async {
        let identity = read { $0.identity }
        let info: LinkInfo
        do {
            try await stream.outbound.write(LinkHandshake.hello(for: identity))
            let first = try await firstEnvelope(of: stream)
            let (peerID, hello) = try LinkHandshake.validate(first, local: identity, peer: stream.peer, expected: plan?.peer)
            let id = core.withLock { core -> LinkID in
                defer { core.nextLinkID += 1 }
                return LinkID(core.nextLinkID)
            }
            info = LinkInfo(
                id: id, peerID: peerID, peerName: hello.displayName.isEmpty ? peerID.rawValue : String(hello.displayName.prefix(128)),
                peerIncarnation: hello.incarnation, advertised: hello.advertisedEndpoints.prefix(16).compactMap(DiscoveredEndpoint.init(wire:)),
                labels: hello.labels, direction: direction, transport: stream.peer.transport, remoteAddress: stream.peer.remoteAddress,
                certificateExpiryUnix: stream.peer.certificateExpiry, dial: plan)
        } catch {
            logger.warning("link \(direction == .inbound ? "from" : "to") \(stream.peer) refused: \(error)")
            if let plan { feed(.dialFailed(plan, reason: "\(error)", selfConnection: (error as? MeshError)?.kind == .selfConnection)) }
            await refuse(stream, reason: "\(error)")
            return
        }
        let link = PeerLink(info: info, stream: stream)
        let refusal = core.withLock { core -> String? in
            // The handle is in place before the state decides, so what it sends on admission goes out.
            core.handles[info.id] = link
            let actions = core.state.handle(.linkUp(info), at: now())
            perform(actions, in: &core)
            guard let reason = core.refused.removeValue(forKey: info.id) else { return nil }
            core.handles.removeValue(forKey: info.id)
            return reason
        }
        if let refusal {
            await refuse(stream, reason: refusal)
            return
        }
        let error = await run(link)
        core.withLock { core in
            core.handles.removeValue(forKey: info.id)
            let actions = core.state.handle(.linkDown(info.id, error: error.map { "\($0)" }), at: now())
            perform(actions, in: &core)
        }
    }

    /// The peer's first envelope, or an error after the handshake timeout.
    private func firstEnvelope(of stream: MeshStream) async throws -> Envelope? {
        let timeout = options.handshakeTimeout
        return try await withThrowingTaskGroup(of: Envelope??.self) { group in
            group.addTask {
                var iterator = stream.inbound.makeAsyncIterator()
                return .some(try await iterator.next())
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return Envelope??.none
            }
            defer { group.cancelAll() }
            guard let result = try await group.next(), let first = result else {
                throw MeshError(.badHello, "no Hello from the peer within \(timeout)")
            }
            return first
        }
    }

    /// Says why, ends our half, waits briefly for the peer's end, then cuts the link.
    private func refuse(_ stream: MeshStream, reason: String) async {
        let grace = options.closeGrace
        _ = try? await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await stream.outbound.write(LinkHandshake.goodbye(reason))
                await stream.outbound.finish()
                for try await _ in stream.inbound {}
            }
            group.addTask { try await Task.sleep(for: grace) }
            defer { group.cancelAll() }
            try await group.next()
        }
        stream.outbound.abort()
    }

    /// Reads and writes one admitted link until it ends; returns why it broke, if it did.
    private func run(_ link: PeerLink) async -> (any Error)? {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    while let envelope = try await link.outbound.next() {
                        try await link.stream.outbound.write(envelope)
                    }
                    await link.stream.outbound.finish()
                }
                group.addTask {
                    for try await envelope in link.stream.inbound {
                        link.received()
                        self.feed(.envelope(envelope, from: link.id))
                    }
                    // The peer ended its half: end ours (after a Goodbye if the state has not said one).
                    link.close(reason: "the peer ended the link")
                }
                group.addTask {
                    await link.waitForCut()
                    throw MeshError(.refused, "the link was cut")
                }
                // Reader and writer both end on a clean close; the cut task only ever throws.
                do {
                    try await group.next()
                    try await group.next()
                } catch {
                    link.outbound.finish()
                    link.stream.outbound.abort()
                    throw error
                }
                group.cancelAll()
            }
            return nil
        } catch {
            return error
        }
    }

    // MARK: For the layers above

    /// Cuts the live link to `peer` abruptly, as a network fault would (both
    /// ends see it end; what was in flight is lost): for chaos drills, tests and
    /// benchmarks. False when there is no such link.
    @discardableResult
    public func cut(linkTo peer: NodeID) -> Bool {
        let handle = core.withLock { core in core.state.topology.links[peer].flatMap { core.handles[$0] } }
        handle?.abort()
        return handle != nil
    }

    /// Links this node cut because their peer went silent, and its local health (Lifeguard's multiplier).
    public var failureDetection: (silenceCuts: Int, localHealth: Int) { read { ($0.silenceCuts, $0.localHealth) } }

    /// Live links' handles, by peer id.
    public func links() -> [PeerLink] {
        core.withLock { core in
            core.state.topology.linkedPeers.compactMap { core.state.topology.links[$0].flatMap { core.handles[$0] } }
        }
    }

    /// The nodes `neighbour` last said it has direct links to (nil: not known yet).
    public func linkedPeers(of neighbour: NodeID) -> Set<NodeID>? { read { $0.linkedPeers(of: neighbour) } }

    /// Every node this node knows of, linked or not (itself excluded).
    public func knownPeers() -> Set<NodeID> { read { $0.knownPeerIDs } }

    /// The link graph as this node knows it.
    public func topology() -> MeshTopologyView { read { $0.topology } }

    /// The address the preferred transport bound, once listening.
    public var listeningAddress: HostPort? { extras.withLock { $0.listening.first?.address } }

    /// Every bound listener, once listening.
    public var listening: [DiscoveredEndpoint] { extras.withLock { $0.listening } }

    public func status() -> MeshStatus {
        let at = now()
        let (identity, peers, health, ownReachability) = core.withLock { core in
            let handles = core.handles
            return (core.state.identity, core.state.status(at: at, counters: { handles[$0]?.counters }), core.state.discoveryHealth, core.state.ownReachability)
        }
        let (failure, reports, certificate) = extras.withLock { ($0.discoveryFailure, $0.probeReports, $0.certificate) }
        let discoveryStatus: DiscoveryStatus
        if let failure {
            discoveryStatus = DiscoveryStatus(kind: discovery?.name ?? "none", health: "failed", detail: failure)
        } else {
            switch health {
            case .none: discoveryStatus = DiscoveryStatus(kind: discovery?.name ?? "none", health: discovery == nil ? "none" : "starting")
            case .healthy: discoveryStatus = DiscoveryStatus(kind: discovery?.name ?? "none", health: "healthy")
            case .degraded(let reason): discoveryStatus = DiscoveryStatus(kind: discovery?.name ?? "none", health: "degraded", detail: reason)
            }
        }
        let local = LocalStatus(
            nodeID: identity.nodeID.rawValue, name: identity.displayName, cluster: identity.clusterName, incarnation: identity.incarnation,
            startedAt: Timestamp.string(startedAt), version: AgentFlowVersion.current, transport: identity.transport,
            transports: identity.transports, listen: listeningAddress?.description, listening: listening.map(\.description), advertised: identity.advertised.map(\.description), tls: usesTLS,
            maxPeers: options.maxPeers, discovery: discoveryStatus, labels: identity.labels,
            reachability: ownReachability, probes: reports,
            certificate: certificate.map { CertificateStatus(file: $0.file, notAfterUnix: $0.notAfterUnix, nowUnix: unixMicros() / 1_000_000) })
        return MeshStatus(local: local, peers: peers, linkCount: peers.filter { $0.state == .connected }.count)
    }

    /// Records this node's latest probe reports and what they say about
    /// reaching it: shown in the status, and told to peers (who stop dialling
    /// a node that is not dialable from outside; it dials them).
    public func setProbeResults(_ reports: [ProbeReport], reachability: PeerReachability?) {
        extras.withLock { $0.probeReports = reports }
        if let reachability { feed(.reachability(reachability)) }
    }

    /// Records when this node's own certificate expires, for the status and `/metrics`.
    public func setCertificateExpiry(file: String, notAfterUnix: Int64) {
        extras.withLock { $0.certificate = (file, notAfterUnix) }
    }

    /// What `id`'s probes last said, as heard through peer exchange.
    public func reachability(of id: NodeID) -> PeerReachability? { read { $0.reachability(of: id) } }

    /// Counters for `/metrics`.
    public func counters() -> (dialFailures: Int, linksEstablished: Int) {
        read { ($0.dialFailures, $0.linksEstablished) }
    }

    /// Sends that found a link's queue full (the peer was behind) and were dropped; syncs repair them.
    public var droppedSends: UInt64 { core.withLock { $0.droppedSends } }
}
