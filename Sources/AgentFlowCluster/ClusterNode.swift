public import AgentFlowCore
public import AgentFlowMesh
public import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import Logging
import Synchronization

/// How cluster state flows; from the `state:` block of a master's config.
public struct ClusterOptions: Sendable {
    /// Events kept per origin to hand peers that missed them; older gaps get a snapshot.
    public var retainedEvents: Int
    /// Every link exchanges cursors this often, so a trailing loss is repaired without new traffic.
    public var syncInterval: Duration
    /// Relay hops an event or command may take.
    public var hopLimit: UInt32
    /// Log lines kept per origin in its state.
    public var recentLogLines: Int

    public init(retainedEvents: Int = 4_096, syncInterval: Duration = .seconds(5), hopLimit: UInt32 = 16, recentLogLines: Int = 50) {
        self.retainedEvents = retainedEvents
        self.syncInterval = syncInterval
        self.hopLimit = hopLimit
        self.recentLogLines = recentLogLines
    }
}

/// A change to the cluster view, as subscribers (`updates()`) see it.
public enum ClusterUpdate: Sendable {
    /// An event applied (local or from a peer), in its origin's order.
    case event(ClusterEvent)
    /// An origin's state replaced by a snapshot from a peer.
    case snapshot(Agentflow_Mesh_V1_NodeState)
}

/// The cluster-state layer of a master, on top of the mesh.
///
/// - **Publish.** A local change gets the origin's next sequence in this run
///   (`incarnation`), is applied to the local store, and goes to every link.
/// - **Receive.** Events apply per origin in order (`ClusterStore`); a
///   duplicate is dropped, a gap makes this node ask the sender to sync.
/// - **Relay.** A newly applied event is forwarded to each other neighbour
///   that has no direct link to its origin nor to the neighbour it came from
///   (neighbours report their links in PeerExchange), with its hop limit decremented. In a full mesh nothing is
///   relayed; in a partial one events flow along the ring. Each node forwards
///   an event at most once (duplicates are not re-applied).
/// - **Sync.** On every new link, and every `syncInterval`, both ends send
///   their per-origin cursors; each answers with what the other lacks: the
///   missing events from its retained log, or a snapshot.
/// - **Never blocked by a slow peer.** Sends do not wait: an event that does
///   not fit a link's queue is skipped, and that peer's next sync (or its gap
///   detection) brings it back.
public final class ClusterNode: MeshApplication, Sendable {
    public let localID: NodeID
    public let incarnation: UInt64
    public let options: ClusterOptions
    let logger: Logger
    /// Handles commands addressed to this node or passing through it; set once at assembly.
    let commands = Mutex<CommandRouter?>(nil)

    struct State {
        var store: ClusterStore
        var nextSequence: UInt64 = 1
        var links: [NodeID: PeerLink] = [:]
        var neighbourLinks: [NodeID: Set<NodeID>] = [:]
        var lastSyncAsked: [NodeID: ContinuousClock.Instant] = [:]
        var subscribers: [UInt64: AsyncStream<ClusterUpdate>.Continuation] = [:]
        var nextSubscriber: UInt64 = 0
        var counters = Counters()
    }

    /// What happened to events here, for `/metrics` and the benchmark.
    public struct Counters: Sendable {
        public var published: UInt64 = 0
        public var applied: UInt64 = 0
        public var duplicates: UInt64 = 0
        public var stale: UInt64 = 0
        public var gaps: UInt64 = 0
        public var relayed: UInt64 = 0
        public var skippedFullQueue: UInt64 = 0
        public var snapshotsApplied: UInt64 = 0
        public var syncEventsSent: UInt64 = 0
        public var syncSnapshotsSent: UInt64 = 0
        public init() {}
    }

    let state: Mutex<State>

    public init(localID: NodeID, incarnation: UInt64, options: ClusterOptions = ClusterOptions(), logger: Logger = Logger(label: "agentflow.cluster")) {
        self.localID = localID
        self.incarnation = incarnation
        self.options = options
        self.logger = logger
        state = Mutex(State(store: ClusterStore(retainedPerOrigin: options.retainedEvents, recentLogLines: options.recentLogLines)))
    }

    // MARK: Publishing

    /// Publishes a local change: stamps it with this node's next sequence and
    /// sends it to every link. Returns the event as stamped.
    @discardableResult
    public func publish(_ event: ClusterEvent) -> ClusterEvent {
        var event = event
        let now = unixMicros()
        let (stamped, links, subscribers) = state.withLock { state -> (ClusterEvent, [PeerLink], [AsyncStream<ClusterUpdate>.Continuation]) in
            var header = Agentflow_Mesh_V1_EventHeader()
            header.origin = localID.rawValue
            header.incarnation = incarnation
            header.sequence = state.nextSequence
            header.timestampUnixMicros = now
            header.hopLimit = options.hopLimit
            event.header = header
            state.nextSequence += 1
            _ = state.store.apply(event, via: nil, nowMicros: now)
            state.counters.published += 1
            return (event, Array(state.links.values), Array(state.subscribers.values))
        }
        // Enqueued in sequence order on every link (the lock above orders publishers; trySend does not wait).
        let envelope = stamped.envelope
        var skipped: UInt64 = 0
        for link in links where !link.trySend(envelope) { skipped += 1 }
        if skipped > 0 { state.withLock { $0.counters.skippedFullQueue += skipped } }
        for subscriber in subscribers { subscriber.yield(.event(stamped)) }
        return stamped
    }

    /// Every change to the cluster view from now on, in each origin's order.
    public func updates() -> AsyncStream<ClusterUpdate> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterUpdate.self, bufferingPolicy: .bufferingNewest(10_000))
        let id = state.withLock { state -> UInt64 in
            state.nextSubscriber += 1
            state.subscribers[state.nextSubscriber] = continuation
            return state.nextSubscriber
        }
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) } }
        return stream
    }

    // MARK: The view

    /// Every origin's state, the local node's included.
    public func origins() -> [String: ClusterStore.Origin] { state.withLock { $0.store.origins } }

    public var counters: Counters { state.withLock { $0.counters } }

    /// True when this node holds state of `origin` (it has heard of it).
    public func knows(_ origin: NodeID) -> Bool { state.withLock { $0.store.origins[origin.rawValue] != nil } }

    /// The neighbour that reaches `target`: the direct link, a neighbour linked
    /// to it, or the one its events arrive through. Nil when none is known.
    func nextHop(to target: NodeID, excluding: NodeID? = nil) -> PeerLink? {
        state.withLock { state in
            if let direct = state.links[target] { return direct }
            for (id, link) in state.links.sorted(by: { $0.key < $1.key }) where id != excluding && state.neighbourLinks[id]?.contains(target) == true {
                return link
            }
            if let via = state.store.origins[target.rawValue]?.via, let id = NodeID(via), id != excluding, let link = state.links[id] { return link }
            return nil
        }
    }

    var liveLinks: [PeerLink] { state.withLock { Array($0.links.values) } }

    /// Why `target` looks unreachable from here, or nil when a path is plausible:
    /// a direct link, a neighbour linked to it, or news from it within `recent`.
    func unreachableReason(_ target: NodeID, recent: Duration = .seconds(60)) -> String? {
        state.withLock { state in
            if state.links.isEmpty { return "\(localID) has no live link to any master" }
            if state.links[target] != nil { return nil }
            if state.neighbourLinks.values.contains(where: { $0.contains(target) }) { return nil }
            if let origin = state.store.origins[target.rawValue], origin.lastAppliedAtMicros > 0 {
                let age = unixMicros() - origin.lastAppliedAtMicros
                if age <= recent.components.seconds * 1_000_000 { return nil }
                return "no link to \(target), no neighbour linked to it, and no news from it for \(age / 1_000_000) s"
            }
            return "no link to \(target), no neighbour linked to it, and no news from it yet"
        }
    }

    // MARK: MeshApplication

    public func linkEstablished(_ link: PeerLink) async {
        state.withLock { $0.links[link.peerID] = link }
        sendSyncRequest(on: link)
    }

    public func linkClosed(_ link: PeerLink) async {
        state.withLock { state in
            if state.links[link.peerID] === link {
                state.links.removeValue(forKey: link.peerID)
                state.neighbourLinks.removeValue(forKey: link.peerID)
            }
        }
    }

    public func neighbour(_ neighbour: NodeID, isLinkedTo peers: Set<NodeID>) async {
        state.withLock { $0.neighbourLinks[neighbour] = peers }
    }

    public func received(_ envelope: Envelope, from link: PeerLink) async {
        if let event = ClusterEvent(envelope) {
            receive(event, from: link)
            return
        }
        switch envelope.body {
        case .syncRequest(let request):
            answerSync(request, on: link)
        case .snapshot(let snapshot):
            receive(snapshot, from: link)
        case .command, .commandReceipt, .commandResult:
            if let router = commands.withLock({ $0 }) { await router.received(envelope, from: link) }
        case .snapshotRequest:
            // A peer that wants everything: our cursors-free answer is every snapshot.
            let states = state.withLock { Array($0.store.origins.values.map(\.state)) }
            sendSnapshots(states, on: link)
        default:
            break
        }
    }

    private func receive(_ event: ClusterEvent, from link: PeerLink) {
        let header = event.header
        guard !header.origin.isEmpty, header.origin != localID.rawValue else { return }
        let now = unixMicros()
        let (outcome, targets, subscribers) = state.withLock { state -> (ClusterStore.Outcome, [PeerLink], [AsyncStream<ClusterUpdate>.Continuation]) in
            let outcome = state.store.apply(event, via: link.peerID.rawValue, nowMicros: now)
            switch outcome {
            case .applied:
                state.counters.applied += 1
                guard header.hopLimit > 1 else { return (outcome, [], Array(state.subscribers.values)) }
                // Skip a neighbour linked to the origin (it got the event first-hand) or to the
                // neighbour this came from (that one forwards to it, or it is that one's source).
                let origin = NodeID(header.origin)
                let senderLinks = state.neighbourLinks[link.peerID] ?? []
                let targets = state.links.filter { id, _ in
                    id != link.peerID && id != origin && !senderLinks.contains(id)
                        && !(origin.map { state.neighbourLinks[id]?.contains($0) == true } ?? false)
                }.map(\.value)
                return (outcome, targets, Array(state.subscribers.values))
            case .duplicate:
                state.counters.duplicates += 1
            case .stale:
                state.counters.stale += 1
            case .gap:
                state.counters.gaps += 1
            }
            return (outcome, [], [])
        }
        switch outcome {
        case .applied:
            for subscriber in subscribers { subscriber.yield(.event(event)) }
            guard !targets.isEmpty else { return }
            var forwarded = event
            forwarded.header.hopLimit = header.hopLimit - 1
            let envelope = forwarded.envelope
            var relayed: UInt64 = 0
            var skipped: UInt64 = 0
            for target in targets {
                if target.trySend(envelope) { relayed += 1 } else { skipped += 1 }
            }
            state.withLock {
                $0.counters.relayed += relayed
                $0.counters.skippedFullQueue += skipped
            }
        case .gap:
            sendSyncRequest(on: link, onlyIfQuiet: true)
        default:
            break
        }
    }

    private func receive(_ snapshot: Agentflow_Mesh_V1_Snapshot, from link: PeerLink) {
        let now = unixMicros()
        let (applied, subscribers) = state.withLock { state -> ([Agentflow_Mesh_V1_NodeState], [AsyncStream<ClusterUpdate>.Continuation]) in
            var applied: [Agentflow_Mesh_V1_NodeState] = []
            for node in snapshot.nodes where node.origin != localID.rawValue && NodeID(node.origin) != nil {
                if state.store.applySnapshot(node, via: link.peerID.rawValue, nowMicros: now) { applied.append(node) }
            }
            state.counters.snapshotsApplied += UInt64(applied.count)
            return (applied, Array(state.subscribers.values))
        }
        for node in applied {
            for subscriber in subscribers { subscriber.yield(.snapshot(node)) }
        }
        // A snapshot moves our cursors; neighbours behind us catch up at their next sync.
    }

    // MARK: Sync

    /// Sends our cursors to `link` (its answer fills our gaps). With
    /// `onlyIfQuiet`, at most one request per link every 200 ms (a burst of
    /// gapped events asks once).
    func sendSyncRequest(on link: PeerLink, onlyIfQuiet: Bool = false) {
        let cursors = state.withLock { state -> [Agentflow_Mesh_V1_OriginCursor]? in
            let now = ContinuousClock.now
            if onlyIfQuiet, let last = state.lastSyncAsked[link.peerID], now - last < .milliseconds(200) { return nil }
            state.lastSyncAsked[link.peerID] = now
            return state.store.cursors()
        }
        guard let cursors else { return }
        var envelope = Envelope()
        envelope.syncRequest.cursors = cursors
        link.trySend(envelope)
    }

    private func answerSync(_ request: Agentflow_Mesh_V1_SyncRequest, on link: PeerLink) {
        let (events, snapshots) = state.withLock { state in
            state.store.missing(for: Array(request.cursors.prefix(100_000)))
        }
        guard !events.isEmpty || !snapshots.isEmpty else { return }
        state.withLock {
            $0.counters.syncEventsSent += UInt64(events.count)
            $0.counters.syncSnapshotsSent += UInt64(snapshots.count)
        }
        logger.debug("sync: sending \(link.peerID) \(events.count) event(s) and \(snapshots.count) snapshot(s)")
        sendSnapshots(snapshots, on: link)
        let hopLimit = options.hopLimit
        // These may exceed the queue: send them in order, waiting for room, off the reader's path.
        Task {
            for var event in events {
                event.header.hopLimit = hopLimit
                do { try await link.send(event.envelope) } catch { return }
            }
        }
    }

    private func sendSnapshots(_ states: [Agentflow_Mesh_V1_NodeState], on link: PeerLink) {
        guard !states.isEmpty else { return }
        // Chunks keep each envelope far below max_message_bytes (a state carries at most recent_log_lines lines).
        let chunks = stride(from: 0, to: states.count, by: 16).map { Array(states[$0..<min($0 + 16, states.count)]) }
        Task {
            for chunk in chunks {
                var envelope = Envelope()
                envelope.snapshot.nodes = chunk
                envelope.snapshot.takenAtUnixMicros = unixMicros()
                do { try await link.send(envelope) } catch { return }
            }
        }
    }

    /// Runs the periodic anti-entropy until cancelled.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: options.syncInterval)
            for link in liveLinks { sendSyncRequest(on: link) }
        }
    }
}
