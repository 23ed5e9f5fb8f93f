public import AgentFlowCore
import AgentFlowProto
public import Logging
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// A master's place in the mesh: it listens on each of its transports, follows its
/// discovery backend, dials the peers it should be linked to, serves every
/// link (Hello, Ping/Pong, PeerExchange, Goodbye) and hands every other
/// envelope to the application above it.
///
/// Transport-agnostic: it only sees `Transport`, `Discovery` and `MeshStream`.
/// With several transports it listens on all of them and dials a peer on the
/// first one, in the node's order of preference, that the peer also offers.
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
    let manager: ConnectionManager
    let application: (any MeshApplication)?
    let logger: Logger
    let advertise: @Sendable (DiscoveredEndpoint) -> [DiscoveredEndpoint]
    let usesTLS: Bool
    let startedAt = Date()

    private struct State {
        var listening: [DiscoveredEndpoint] = []
        var discoveryTask: Task<Void, Never>?
        var discoveryFailure: String?
        var probeReports: [ProbeReport] = []
        var certificate: (file: String, notAfterUnix: Int64)?
        var shutDown = false
    }

    private let state = Mutex(State())

    /// - Parameters:
    ///   - identity: who this node says it is in every `Hello`.
    ///   - transports: one per name in `identity.transports`, in the same order.
    ///   - discovery: where peers come from; nil for a node that only accepts links.
    ///   - options: timings, topology (`max_peers`) and the peer book's file.
    ///   - application: what receives every envelope the mesh does not handle itself (cluster state).
    ///   - usesTLS: whether the links are mutually authenticated (shown in the status).
    ///   - logger: the node's logger.
    ///   - advertise: the endpoints to announce, given the endpoint a
    ///     transport actually bound (a wildcard host or port 0 resolved by the caller).
    public init(identity: LocalIdentity, transports: [any Transport], discovery: (any Discovery)?, options: MeshOptions,
                application: (any MeshApplication)? = nil, usesTLS: Bool = true, logger: Logger = Logger(label: "agentflow.mesh"),
                advertise: @escaping @Sendable (DiscoveredEndpoint) -> [DiscoveredEndpoint] = { [$0] }) {
        precondition(transports.map(\.name) == identity.transports, "transports \(transports.map(\.name)) differ from the identity's \(identity.transports)")
        self.transports = transports
        self.discovery = discovery
        self.options = options
        self.application = application
        self.logger = logger
        self.advertise = advertise
        self.usesTLS = usesTLS
        manager = ConnectionManager(identity: identity, options: options, logger: logger)
    }

    /// A node with one transport.
    public convenience init(identity: LocalIdentity, transport: any Transport, discovery: (any Discovery)?, options: MeshOptions,
                            application: (any MeshApplication)? = nil, usesTLS: Bool = true, logger: Logger = Logger(label: "agentflow.mesh"),
                            advertise: @escaping @Sendable (HostPort) -> [HostPort] = { [$0] }) {
        self.init(identity: identity, transports: [transport], discovery: discovery, options: options, application: application,
                  usesTLS: usesTLS, logger: logger,
                  advertise: { bound in advertise(bound.address).map { DiscoveredEndpoint(transport: bound.transport, address: $0) } })
    }

    /// The preferred transport.
    public var transport: any Transport { transports[0] }

    // MARK: Running

    /// Runs the node until `shutdown()` (graceful: Goodbye on every link,
    /// deregistration) or cancellation (abrupt). Throws when the transport cannot listen.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for transport in transports {
                group.addTask {
                    try await transport.listen { stream in
                        await self.serve(stream, direction: .inbound, expected: nil)
                    }
                }
            }
            var bound: [DiscoveredEndpoint] = []
            for transport in transports {
                bound.append(DiscoveredEndpoint(transport: transport.name, address: try await transport.listeningAddress()))
            }
            let identity = await manager.identity
            let advertised = bound.flatMap(advertise)
            await manager.setAdvertised(advertised)
            state.withLock { $0.listening = bound }
            logger.info("mesh node \(identity.nodeID) up: \(bound.map(\.description).joined(separator: ", ")), advertising \(advertised.map(\.description).joined(separator: ", ")); max_peers \(options.maxPeers == 0 ? "0 (full mesh)" : String(options.maxPeers))")
            startDiscovery(LocalAnnouncement(nodeID: identity.nodeID, displayName: identity.displayName, endpoints: advertised, labels: identity.labels))

            while !state.withLock({ $0.shutDown }) && !Task.isCancelled {
                for plan in await manager.plan() {
                    group.addTask { await self.dial(plan) }
                }
                if await manager.takeExchangeDue() {
                    let exchange = await manager.peerExchange()
                    for link in await manager.liveLinks { link.trySend(exchange) }
                }
                await manager.upkeep()
                try? await Task.sleep(for: options.tick)
            }
            await self.drainOnShutdown()
        }
    }

    /// Starts a graceful shutdown: stop dialling, say Goodbye on every link,
    /// stop discovery (a signal backend deregisters), stop the transport.
    /// `run` returns once links have ended (bounded by `closeGrace`).
    public func shutdown() {
        let task = state.withLock { state -> Task<Void, Never>? in
            state.shutDown = true
            return state.discoveryTask
        }
        task?.cancel()
    }

    private func drainOnShutdown() async {
        if Task.isCancelled {
            // Cancelled rather than shut down: links are being cut with their tasks.
            state.withLock { $0.discoveryTask }?.cancel()
            for transport in transports { transport.beginGracefulShutdown() }
            return
        }
        let links = await manager.beginShutdown()
        for link in links { link.close(reason: "\(await manager.identity.nodeID) is shutting down") }
        let task = state.withLock { $0.discoveryTask }
        task?.cancel()
        await task?.value
        // Links end once peers answer our Goodbye, or after closeGrace; then stop the transport.
        let deadline = ContinuousClock.now + options.closeGrace + .milliseconds(500)
        while ContinuousClock.now < deadline, !(await manager.liveLinks.isEmpty) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for transport in transports { transport.beginGracefulShutdown() }
    }

    private func startDiscovery(_ announcement: LocalAnnouncement) {
        guard let discovery else { return }
        let task = Task {
            do {
                for try await update in discovery.peerSets(announcing: announcement) {
                    await manager.applyDiscovery(update)
                    if case .degraded(let reason) = update.health {
                        logger.debug("discovery \(discovery.name) degraded: \(reason); keeping \(update.peers.count) known peer(s)")
                    }
                }
            } catch {
                state.withLock { $0.discoveryFailure = "\(error)" }
                logger.error("discovery \(discovery.name) stopped: \(error). Live links and the peer book keep the mesh; fix the cause and restart.")
            }
        }
        state.withLock { $0.discoveryTask = task }
    }

    // MARK: Links

    private func dial(_ plan: ConnectionManager.DialPlan) async {
        let stream: MeshStream
        do {
            guard let transport = transports.first(where: { $0.name == plan.endpoint.transport }) else {
                throw MeshError(.refused, "this node does not speak \(plan.endpoint.transport)")
            }
            stream = try await transport.connect(to: plan.endpoint.address, expectedPeer: plan.peer)
        } catch {
            await manager.dialFailed(plan, error: error)
            return
        }
        await withTaskExecutorPreference(stream.executor) {
            await serve(stream, direction: .outbound, expected: plan.peer, plan: plan)
        }
    }

    /// Serves one link from the Hello exchange to its end.
    func serve(_ stream: MeshStream, direction: LinkDirection, expected: NodeID?, plan: ConnectionManager.DialPlan? = nil) async {
        let identity = await manager.identity
        let link: PeerLink
        do {
            try await stream.outbound.write(LinkHandshake.hello(for: identity))
            let first = try await firstEnvelope(of: stream)
            let (peerID, hello) = try LinkHandshake.validate(first, local: identity, peer: stream.peer, expected: expected)
            link = PeerLink(peerID: peerID, hello: hello, direction: direction, stream: stream)
            if let plan, plan.peer == nil { await manager.identified(plan.endpoint, as: peerID) }
        } catch {
            logger.warning("link \(direction == .inbound ? "from" : "to") \(stream.peer) refused: \(error)")
            if let plan { await manager.dialFailed(plan, error: error) }
            await refuse(stream, reason: "\(error)")
            return
        }
        switch await manager.admit(link) {
        case .refused(let reason):
            logger.debug("link \(direction == .inbound ? "from" : "to") \(link.peerID) not kept: \(reason)")
            await refuse(stream, reason: reason)
            return
        case .admitted(let displaced):
            displaced?.close(reason: "replaced by a newer link")
        }
        logger.info("link to \(link.peerID) up (\(direction.rawValue), \(link.transport), \(link.remoteAddress))")
        await application?.linkEstablished(link)
        link.trySend(Self.ping())
        link.trySend(await manager.peerExchange())
        let error = await run(link)
        await manager.linkEnded(link, error: error)
        await application?.linkClosed(link)
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

    /// Reads, writes and watches one admitted link until it ends; returns why it broke, if it did.
    private func run(_ link: PeerLink) async -> (any Error)? {
        let options = options
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
                        link.touch()
                        await self.handle(envelope, on: link)
                    }
                    link.close(reason: link.goodbyeReceived.map { "answering the peer's goodbye (\($0))" } ?? "the peer ended the link")
                }
                group.addTask {
                    try await Self.watch(link, options: options)
                }
                // Reader and writer both end on a clean close; the watchdog only ever throws.
                do {
                    try await group.next()
                    try await group.next()
                } catch {
                    // Cut the link before the group waits for its children: a reader or
                    // writer blocked on a silent peer would otherwise hold it open.
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

    /// Pings on schedule; throws when the peer went silent or ignores our close.
    private static func watch(_ link: PeerLink, options: MeshOptions) async throws {
        var nextPing = ContinuousClock.now + options.pingInterval
        let step = min(options.pingInterval, .milliseconds(250))
        while true {
            try await Task.sleep(for: step)
            let now = ContinuousClock.now
            if let closing = link.closeRequestedAt, now - closing > options.closeGrace {
                throw MeshError(.refused, "the peer did not end the link within \(options.closeGrace) of this node's goodbye")
            }
            if now - link.lastReceived > options.peerTimeout {
                throw MeshError(.peerTimeout, "nothing from \(link.peerID) for \(options.peerTimeout) (mesh.peer_timeout)")
            }
            // A certificate is checked at the handshake; one that expires while its link is up ends the link then.
            if let expiry = link.stream.peer.certificateExpiry, unixMicros() / 1_000_000 >= expiry {
                throw MeshError(.refused, "the certificate of \(link.peerID) expired at \(Timestamp.string(unixMicros: expiry * 1_000_000)); a new link needs a renewed one")
            }
            if now >= nextPing {
                link.trySend(ping())
                nextPing = now + options.pingInterval
            }
        }
    }

    private func handle(_ envelope: Envelope, on link: PeerLink) async {
        switch envelope.body {
        case .ping(let ping):
            var pong = Envelope()
            pong.pong.nonce = ping.nonce
            pong.pong.pingSentUnixMicros = ping.sentUnixMicros
            try? await link.send(pong)
        case .pong(let pong):
            let micros = max(0, unixMicros() - pong.pingSentUnixMicros)
            link.recordRoundTrip(.microseconds(micros))
        case .peerExchange(let exchange):
            await manager.learn(exchange, from: link)
            if let own = exchange.peers.first(where: { $0.nodeID == link.peerID.rawValue }) {
                await application?.neighbour(link.peerID, isLinkedTo: Set(own.linkedPeers.prefix(10_000).compactMap { NodeID($0) }))
            }
        case .goodbye(let goodbye):
            link.receivedGoodbye(goodbye.reason)
            logger.info("\(link.peerID) says goodbye: \(goodbye.reason)")
        case .hello:
            logger.warning("\(link.peerID) sent a second Hello; ignored")
        case .none:
            break  // a kind this version does not know: skipped, as the contract says
        default:
            await application?.received(envelope, from: link)
        }
    }

    static func ping() -> Envelope {
        var envelope = Envelope()
        envelope.ping.nonce = UInt64.random(in: 1...UInt64.max)
        envelope.ping.sentUnixMicros = unixMicros()
        return envelope
    }

    // MARK: For the layers above

    /// Live links, by peer id.
    public func links() async -> [PeerLink] { await manager.liveLinks }

    /// The nodes `neighbour` last said it has direct links to (nil: not known yet).
    public func linkedPeers(of neighbour: NodeID) async -> Set<NodeID>? { await manager.linkedPeers(of: neighbour) }

    /// Every node this node knows of, linked or not (itself excluded).
    public func knownPeers() async -> Set<NodeID> { await manager.knownPeerIDs }

    /// The address the preferred transport bound, once listening.
    public var listeningAddress: HostPort? { state.withLock { $0.listening.first?.address } }

    /// Every bound listener, once listening.
    public var listening: [DiscoveredEndpoint] { state.withLock { $0.listening } }

    public func status() async -> MeshStatus {
        let identity = await manager.identity
        let peers = await manager.status()
        let health = await manager.discoveryHealth
        let failure = state.withLock { $0.discoveryFailure }
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
            reachability: await manager.ownReachability, probes: state.withLock { $0.probeReports },
            certificate: state.withLock { $0.certificate }.map { CertificateStatus(file: $0.file, notAfterUnix: $0.notAfterUnix, nowUnix: unixMicros() / 1_000_000) })
        return MeshStatus(local: local, peers: peers, linkCount: peers.filter { $0.state == .connected }.count)
    }

    /// Records this node's latest probe reports and what they say about
    /// reaching it: shown in the status, and told to peers (who stop dialling
    /// a node that is not dialable from outside; it dials them).
    public func setProbeResults(_ reports: [ProbeReport], reachability: PeerReachability?) async {
        state.withLock { $0.probeReports = reports }
        if let reachability { await manager.setReachability(reachability) }
    }

    /// Records when this node's own certificate expires, for the status and `/metrics`.
    public func setCertificateExpiry(file: String, notAfterUnix: Int64) {
        state.withLock { $0.certificate = (file, notAfterUnix) }
    }

    /// What `id`'s probes last said, as heard through peer exchange.
    public func reachability(of id: NodeID) async -> PeerReachability? { await manager.reachability(of: id) }

    /// Counters for `/metrics`.
    public func counters() async -> (dialFailures: Int, linksEstablished: Int) { await manager.counters }
}
