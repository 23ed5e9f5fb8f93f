public import AgentFlowCore
public import AgentFlowMesh
public import AgentFlowProto
import Logging
import SwiftProtobuf

/// Cluster state over the mesh, as I/O-free state that `MeshState` owns.
///
/// - **Publish.** A local change gets the origin's next sequence in this run
///   (`incarnation`), is applied to the local store, and is queued on every
///   live link in the same step: two publishers can never reorder.
/// - **Receive.** Events apply per origin in order (`ClusterStore`); a
///   duplicate is dropped, a gap makes this node ask the sender to sync.
/// - **Broadcast tree.** A newly applied event is pushed on to this node's
///   children on the origin's tree: the shortest-path tree that every node
///   computes alike from the flooded link graph
///   (`MeshTopologyView.broadcastTree`), so each node gets it once. In a full
///   mesh the origin reaches everyone and nothing is relayed. An origin not
///   yet in the graph falls back to the flooding rule: each neighbour linked
///   neither to the origin nor to the sender.
/// - **Lazy push** (Plumtree's IHAVE). Every `announceInterval`, the origins
///   this node applied go as cursors to the links that are off their trees
///   (and not linked to the origin). A neighbour still behind an announced
///   cursor after `graftTimeout` sends `Graft`: the announcer sends what it
///   lacks and pushes that origin to it from then on. A duplicate pushed by
///   a neighbour that is not the tree parent answers `Prune`, which ends a
///   graft. Grafts patch the tree while two nodes' graphs disagree; they are
///   forgotten when the graph changes. An event that arrives other than from
///   the tree parent (the graph is changing under it) is flooded onward like
///   an origin not yet in the graph, so a changing tree leaves no hole.
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
    /// Gap-driven sync requests held back by the per-link limit, and when each may go.
    var deferredSyncs: [NodeID: MeshInstant] = [:]
    var nextSync: MeshInstant?
    /// Per origin, this node's place on its tree, for the graph at `treesVersion`.
    var trees: [NodeID: Tree] = [:]
    var treesVersion: UInt64?
    /// Per origin, neighbours that grafted onto this node (pushed to beyond the tree).
    var grafted: [NodeID: Set<NodeID>] = [:]
    /// Per origin, the neighbour this node grafted onto: a parent as good as the tree's.
    var adopted: [NodeID: NodeID] = [:]
    /// (origin, neighbour) pairs already sent a Prune under this graph.
    var prunesSent: Set<[NodeID]> = []
    /// Origins applied since the last announcement, and the neighbour each last came from.
    var unannounced: [NodeID: NodeID] = [:]
    var nextAnnouncement: MeshInstant?
    /// Origins announced ahead of this node: by whom, up to where, and when to graft.
    var awaited: [NodeID: Awaited] = [:]
    var nextGraftCheck: MeshInstant?

    struct Tree {
        /// Nil when the origin's link state is not known here (or no path reaches this node).
        var parent: NodeID?
        var children: [NodeID]
    }

    struct Awaited {
        var announcer: NodeID
        var cursor: Agentflow_Mesh_V1_OriginCursor
        var deadline: MeshInstant
    }

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
        case .statusUpdate, .taskLog, .alert, .taskStatus, .syncRequest, .snapshot, .snapshotRequest, .announcement, .graft, .prune: true
        default: false
        }
    }

    public var nextDeadline: MeshInstant? {
        ([nextSync, nextAnnouncement, nextGraftCheck].compactMap { $0 } + deferredSyncs.values).min()
    }

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
        deferredSyncs.removeValue(forKey: peer)
        awaited = awaited.filter { $0.value.announcer != peer }
        // A neighbour may have skipped this node because of that link: ask each what it holds.
        for other in context.topology.linkedPeers { sendSyncRequest(to: other, context: &context) }
    }

    public mutating func tick(context: inout MeshContext) {
        let now = context.now.instant
        if let due = nextAnnouncement, now >= due { announce(context: &context) }
        if let due = nextGraftCheck, now >= due { graftOverdue(context: &context) }
        for (peer, due) in deferredSyncs where now >= due {
            deferredSyncs.removeValue(forKey: peer)
            if context.topology.linkedPeers.contains(peer) { sendSyncRequest(to: peer, context: &context) }
        }
        guard let due = nextSync, now >= due else { return }
        nextSync = now + options.syncInterval
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
        case .announcement(let announcement):
            heard(announcement, from: peer, context: &context)
        case .graft(let graft):
            answerGraft(graft, from: peer, context: &context)
        case .prune(let prune):
            refreshTrees(context.topology)
            // A prune ends a graft. The tree's own edges stay: they follow the graph, which converges.
            for name in prune.origins.prefix(10_000) {
                guard let origin = NodeID(name) else { continue }
                grafted[origin]?.remove(peer)
            }
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
            guard let origin = NodeID(header.origin) else { return }
            if nextAnnouncement == nil { nextAnnouncement = context.now.instant + options.announceInterval }
            unannounced[origin] = sender
            guard header.hopLimit > 1 else { return }
            let targets = eagerTargets(of: origin, from: sender, context.topology)
            guard !targets.isEmpty else { return }
            var forwarded = event
            forwarded.header.hopLimit = header.hopLimit - 1
            let envelope = forwarded.envelope
            for target in targets where context.send(envelope, to: target) { counters.relayed += 1 }
        case .duplicate:
            counters.duplicates += 1
            // Pushed along a tree (relays lower the hop limit; sync and graft answers do not) by a
            // neighbour that is not this node's parent on the origin's tree: if that was a graft, end it.
            guard header.hopLimit < options.hopLimit, let origin = NodeID(header.origin), let tree = tree(of: origin, context.topology), let parent = tree.parent,
                  parent != sender, adopted[origin] != sender, prunesSent.insert([origin, sender]).inserted else { return }
            var prune = Envelope()
            prune.prune.origins = [origin.rawValue]
            if context.send(prune, to: sender) { counters.prunes += 1 }
        case .stale:
            counters.stale += 1
        case .gap:
            counters.gaps += 1
            sendSyncRequest(to: sender, onlyIfQuiet: true, context: &context)
        }
    }

    // MARK: Sync

    static let gapSyncSpacing: Duration = .milliseconds(50)

    /// Sends our cursors to `peer` (its answer fills our gaps). With
    /// `onlyIfQuiet`, at most one request per link every `gapSyncSpacing`: a
    /// run of gaps from one neighbour asks once, not once per event. A request
    /// held back goes when the spacing ends, because the gap that asked for it
    /// may be newer than the answer already on its way (a link that broke a
    /// moment ago asks at once, and the events lost with it arrive later).
    mutating func sendSyncRequest(to peer: NodeID, onlyIfQuiet: Bool = false, context: inout MeshContext) {
        let now = context.now.instant
        if onlyIfQuiet, let last = lastSyncAsked[peer], now - last < Self.gapSyncSpacing {
            if deferredSyncs[peer] == nil { deferredSyncs[peer] = last + Self.gapSyncSpacing }
            return
        }
        deferredSyncs.removeValue(forKey: peer)
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

    // MARK: Broadcast tree

    /// Forgets the trees, grafts and prunes of an older graph.
    mutating func refreshTrees(_ topology: MeshTopologyView) {
        guard treesVersion != topology.version else { return }
        treesVersion = topology.version
        trees.removeAll(keepingCapacity: true)
        grafted.removeAll()
        adopted.removeAll()
        prunesSent.removeAll()
    }

    /// This node's place on `origin`'s tree (computed once per graph).
    mutating func tree(of origin: NodeID, _ topology: MeshTopologyView) -> Tree? {
        refreshTrees(topology)
        if let known = trees[origin] { return known.parent == nil ? nil : known }
        let computed = topology.broadcastTree(from: origin)
        let tree = Tree(parent: computed?.parent, children: computed?.children ?? [])
        trees[origin] = tree
        return computed == nil ? nil : tree
    }

    /// The neighbours an event of `origin` that came from `sender` is pushed to.
    mutating func eagerTargets(of origin: NodeID, from sender: NodeID, _ topology: MeshTopologyView) -> [NodeID] {
        // Off the tree — the origin's link state has not reached this node, or the event came from
        // a neighbour that is not this node's parent, so the graph is changing under it (the sender
        // still counts on this node) — it is flooded past the links that cannot have it, as before
        // the tree. Each node forwards an event once, so this costs a few duplicates, not a storm.
        guard let tree = tree(of: origin, topology), tree.parent == sender || adopted[origin] == sender else {
            return topology.linkedPeers.filter { id in
                id != sender && id != origin && !topology.isLinked(sender, id) && !topology.isLinked(id, origin)
            }
        }
        var targets = tree.children.filter { $0 != sender }
        if let extra = grafted[origin] {
            for peer in extra.sorted() where peer != sender && topology.links[peer] != nil && !targets.contains(peer) { targets.append(peer) }
        }
        return targets
    }

    /// Sends each off-tree link the cursors of the origins applied since the last time.
    mutating func announce(context: inout MeshContext) {
        nextAnnouncement = nil
        let topology = context.topology
        var perPeer: [NodeID: [Agentflow_Mesh_V1_OriginCursor]] = [:]
        for (origin, sender) in unannounced.sorted(by: { $0.key < $1.key }) {
            guard let cursor = store.cursor(of: origin.rawValue) else { continue }
            let eager = eagerTargets(of: origin, from: sender, topology)
            for peer in topology.linkedPeers where peer != sender && peer != origin && !eager.contains(peer) && !topology.isLinked(peer, origin) {
                perPeer[peer, default: []].append(cursor)
            }
        }
        unannounced.removeAll(keepingCapacity: true)
        for (peer, cursors) in perPeer.sorted(by: { $0.key < $1.key }) {
            var envelope = Envelope()
            envelope.announcement.have = cursors
            guard context.send(envelope, to: peer) else { continue }
            counters.announcements += 1
            counters.announcedOrigins += UInt64(cursors.count)
            counters.announcementBytes += UInt64((try? envelope.serializedBytes() as [UInt8])?.count ?? 0)
        }
    }

    /// True when `cursor` is ahead of what this node holds of its origin.
    func isBehind(_ cursor: Agentflow_Mesh_V1_OriginCursor) -> Bool {
        guard let mine = store.cursor(of: cursor.origin) else { return true }
        return (cursor.incarnation, cursor.lastSequence) > (mine.incarnation, mine.lastSequence)
    }

    mutating func heard(_ announcement: Agentflow_Mesh_V1_EventAnnouncement, from peer: NodeID, context: inout MeshContext) {
        let deadline = context.now.instant + options.graftTimeout
        for cursor in announcement.have.prefix(10_000) {
            guard let origin = NodeID(cursor.origin), origin != localID, awaited[origin] == nil, isBehind(cursor) else { continue }
            awaited[origin] = Awaited(announcer: peer, cursor: cursor, deadline: deadline)
            if nextGraftCheck == nil || deadline < nextGraftCheck! { nextGraftCheck = deadline }
        }
    }

    /// Grafts onto the announcer of each origin whose announced events have not come along the tree in time.
    mutating func graftOverdue(context: inout MeshContext) {
        let now = context.now.instant
        var perPeer: [NodeID: [Agentflow_Mesh_V1_OriginCursor]] = [:]
        for (origin, wait) in awaited.sorted(by: { $0.key < $1.key }) where wait.deadline <= now {
            awaited.removeValue(forKey: origin)
            guard isBehind(wait.cursor) else { continue }
            var mine = store.cursor(of: origin.rawValue) ?? Agentflow_Mesh_V1_OriginCursor()
            mine.origin = origin.rawValue
            perPeer[wait.announcer, default: []].append(mine)
            refreshTrees(context.topology)
            adopted[origin] = wait.announcer
        }
        nextGraftCheck = awaited.values.map(\.deadline).min()
        for (peer, cursors) in perPeer.sorted(by: { $0.key < $1.key }) {
            var envelope = Envelope()
            envelope.graft.cursors = cursors
            if context.send(envelope, to: peer) {
                counters.grafts += UInt64(cursors.count)
                context.log(.debug, "graft: \(cursors.count) origin(s) announced by \(peer) did not arrive along the tree")
            }
        }
    }

    /// A neighbour grafts onto this node: push it those origins from now on, and send what it lacks.
    mutating func answerGraft(_ graft: Agentflow_Mesh_V1_Graft, from peer: NodeID, context: inout MeshContext) {
        refreshTrees(context.topology)
        let cursors = Array(graft.cursors.prefix(10_000))
        var names: Set<String> = []
        for cursor in cursors {
            guard let origin = NodeID(cursor.origin), origin != peer else { continue }
            names.insert(cursor.origin)
            grafted[origin, default: []].insert(peer)
        }
        let (events, snapshots) = store.missing(for: cursors, only: names)
        counters.syncEventsSent += UInt64(events.count)
        counters.syncSnapshotsSent += UInt64(snapshots.count)
        sendSnapshots(snapshots, to: peer, context: &context)
        for var event in events {
            event.header.hopLimit = options.hopLimit
            context.sendInOrder(event.envelope, to: peer)
        }
    }
}
