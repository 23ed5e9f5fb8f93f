public import AgentFlowCore
public import AgentFlowMesh
public import AgentFlowProto
import Logging

/// Cluster state over the mesh, as I/O-free state that `MeshState` owns.
///
/// - **Publish.** A local change gets the origin's next sequence in this run
///   (`incarnation`), is applied to the local store, and is queued on every
///   live link in the same step: two publishers can never reorder.
/// - **Receive.** Events apply per origin in order (`ClusterStore`); a
///   duplicate is dropped, a gap makes this node ask the sender to sync.
/// - **Relay.** A newly applied event is forwarded to each other neighbour
///   that is linked neither to its origin nor to the neighbour it came from,
///   as the link graph says (both ends of a link must report it), with its
///   hop limit decremented. In a full mesh nothing is relayed.
/// - **Repair while the topology changes.** When a link stops being used,
///   this node's new link state reaches the other links first, then a sync
///   request: a neighbour that skipped this node because of that link answers
///   with what it holds, and relays what arrives later.
/// - **Sync.** On every new link, every lost link, and every `syncInterval`,
///   both ends send their per-origin cursors; each answers with what the
///   other lacks (retained events, or a snapshot), in order and never dropped.
public struct ClusterProtocol: MeshProtocol {
    public let localID: NodeID
    public let incarnation: UInt64
    public let options: ClusterOptions
    public private(set) var store: ClusterStore
    public private(set) var counters = ClusterNode.Counters()
    var nextSequence: UInt64 = 1
    var lastSyncAsked: [NodeID: MeshInstant] = [:]
    var nextSync: MeshInstant?

    /// What the application hears: an update to deliver to subscribers.
    public struct Delivery: Sendable {
        public var update: ClusterUpdate
    }

    public init(localID: NodeID, incarnation: UInt64, options: ClusterOptions) {
        self.localID = localID
        self.incarnation = incarnation
        self.options = options
        store = ClusterStore(retainedPerOrigin: options.retainedEvents, recentLogLines: options.recentLogLines)
    }

    /// Plants a bug for the simulator to find: the store stops checking for gaps.
    package mutating func plantGapBug() { store.acceptsGaps = true }

    public static func handles(_ body: Envelope.OneOf_Body) -> Bool {
        switch body {
        case .statusUpdate, .taskLog, .alert, .taskStatus, .syncRequest, .snapshot, .snapshotRequest: true
        default: false
        }
    }

    public var nextDeadline: MeshInstant? { nextSync }

    // MARK: Publishing

    /// Stamps `event` with this node's next sequence, applies it, and queues
    /// it on every live link, all in one step.
    public mutating func publish(_ event: ClusterEvent, context: inout MeshContext) -> ClusterEvent {
        var event = event
        var header = Agentflow_Mesh_V1_EventHeader()
        header.origin = localID.rawValue
        header.incarnation = incarnation
        header.sequence = nextSequence
        header.timestampUnixMicros = context.now.wallMicros
        header.hopLimit = options.hopLimit
        event.header = header
        nextSequence += 1
        _ = store.apply(event, via: nil, nowMicros: context.now.wallMicros)
        counters.published += 1
        let envelope = event.envelope
        for peer in context.topology.linkedPeers { context.send(envelope, to: peer) }
        context.effect(Delivery(update: .event(event)))
        return event
    }

    // MARK: Links

    public mutating func linkUp(_ peer: NodeID, context: inout MeshContext) {
        if nextSync == nil { nextSync = context.now.instant + options.syncInterval }
        sendSyncRequest(to: peer, context: &context)
    }

    public mutating func linkDown(_ peer: NodeID, context: inout MeshContext) {
        lastSyncAsked.removeValue(forKey: peer)
        // A neighbour may have skipped this node because of that link: ask each what it holds.
        for other in context.topology.linkedPeers { sendSyncRequest(to: other, context: &context) }
    }

    public mutating func tick(context: inout MeshContext) {
        guard let due = nextSync, context.now.instant >= due else { return }
        nextSync = context.now.instant + options.syncInterval
        for peer in context.topology.linkedPeers { sendSyncRequest(to: peer, context: &context) }
    }

    // MARK: Receiving

    public mutating func receive(_ envelope: Envelope, from peer: NodeID, context: inout MeshContext) {
        if let event = ClusterEvent(envelope) {
            receive(event, from: peer, context: &context)
            return
        }
        switch envelope.body {
        case .syncRequest(let request):
            answerSync(request, to: peer, context: &context)
        case .snapshot(let snapshot):
            for node in snapshot.nodes.prefix(10_000) where node.origin != localID.rawValue && NodeID(node.origin) != nil {
                if store.applySnapshot(node, via: peer.rawValue, nowMicros: context.now.wallMicros) {
                    counters.snapshotsApplied += 1
                    context.effect(Delivery(update: .snapshot(node)))
                }
            }
        case .snapshotRequest:
            sendSnapshots(store.origins.values.map(\.state).sorted { $0.origin < $1.origin }, to: peer, context: &context)
        default:
            break
        }
    }

    mutating func receive(_ event: ClusterEvent, from sender: NodeID, context: inout MeshContext) {
        let header = event.header
        guard !header.origin.isEmpty, header.origin != localID.rawValue else { return }
        switch store.apply(event, via: sender.rawValue, nowMicros: context.now.wallMicros) {
        case .applied:
            counters.applied += 1
            context.effect(Delivery(update: .event(event)))
            guard header.hopLimit > 1 else { return }
            let origin = NodeID(header.origin)
            let topology = context.topology
            // Skip a neighbour linked to the origin (it got the event first-hand) or to the
            // neighbour this came from (that one forwards to it, or it is that one's source).
            let targets = topology.linkedPeers.filter { id in
                id != sender && id != origin && !topology.isLinked(sender, id)
                    && !(origin.map { topology.isLinked(id, $0) } ?? false)
            }
            guard !targets.isEmpty else { return }
            var forwarded = event
            forwarded.header.hopLimit = header.hopLimit - 1
            let envelope = forwarded.envelope
            for target in targets where context.send(envelope, to: target) { counters.relayed += 1 }
        case .duplicate:
            counters.duplicates += 1
        case .stale:
            counters.stale += 1
        case .gap:
            counters.gaps += 1
            sendSyncRequest(to: sender, onlyIfQuiet: true, context: &context)
        }
    }

    // MARK: Sync

    /// Sends our cursors to `peer` (its answer fills our gaps). With
    /// `onlyIfQuiet`, at most one request per link every 200 ms.
    mutating func sendSyncRequest(to peer: NodeID, onlyIfQuiet: Bool = false, context: inout MeshContext) {
        let now = context.now.instant
        if onlyIfQuiet, let last = lastSyncAsked[peer], now - last < .milliseconds(200) { return }
        lastSyncAsked[peer] = now
        var envelope = Envelope()
        envelope.syncRequest.cursors = store.cursors()
        context.send(envelope, to: peer)
    }

    mutating func answerSync(_ request: Agentflow_Mesh_V1_SyncRequest, to peer: NodeID, context: inout MeshContext) {
        let (events, snapshots) = store.missing(for: Array(request.cursors.prefix(100_000)))
        guard !events.isEmpty || !snapshots.isEmpty else { return }
        counters.syncEventsSent += UInt64(events.count)
        counters.syncSnapshotsSent += UInt64(snapshots.count)
        context.log(.debug, "sync: sending \(peer) \(events.count) event(s) and \(snapshots.count) snapshot(s)")
        sendSnapshots(snapshots, to: peer, context: &context)
        for var event in events {
            event.header.hopLimit = options.hopLimit
            context.sendInOrder(event.envelope, to: peer)
        }
    }

    func sendSnapshots(_ states: [Agentflow_Mesh_V1_NodeState], to peer: NodeID, context: inout MeshContext) {
        // Chunks keep each envelope far below max_message_bytes (a state carries at most recent_log_lines lines).
        for start in stride(from: 0, to: states.count, by: 16) {
            var envelope = Envelope()
            envelope.snapshot.nodes = Array(states[start..<min(start + 16, states.count)])
            envelope.snapshot.takenAtUnixMicros = context.now.wallMicros
            context.sendInOrder(envelope, to: peer)
        }
    }
}
