public import AgentFlowCore
public import AgentFlowProto
public import Logging

/// A kind of traffic over the mesh, as I/O-free state that `MeshState` owns
/// and drives: cluster events and sync, command routing, and whatever a
/// module adds. A protocol registers the envelope kinds it handles; the core
/// hands it those envelopes, the link changes, and its deadlines. It answers
/// by adding actions to the context. It never reads a clock or does I/O.
public protocol MeshProtocol: Sendable {
    /// True for the envelope bodies this protocol handles. The first
    /// registered protocol that claims a body gets it.
    static func handles(_ body: Envelope.OneOf_Body) -> Bool
    /// A link to `peer` was admitted (the peer's link state may not be known yet).
    mutating func linkUp(_ peer: NodeID, context: inout MeshContext)
    /// The link to `peer` is gone or closing: nothing more can be sent on it.
    /// Called after the new link state was told to the remaining links.
    mutating func linkDown(_ peer: NodeID, context: inout MeshContext)
    /// An envelope of a claimed kind from `peer`, in the link's order.
    mutating func receive(_ envelope: Envelope, from peer: NodeID, context: inout MeshContext)
    /// A deadline this protocol asked for has come (or any other tick).
    mutating func tick(context: inout MeshContext)
    /// The earliest time this protocol wants a `tick`.
    var nextDeadline: MeshInstant? { get }
}

extension MeshProtocol {
    public mutating func linkUp(_ peer: NodeID, context: inout MeshContext) {}
    public mutating func linkDown(_ peer: NodeID, context: inout MeshContext) {}
    public mutating func tick(context: inout MeshContext) {}
    public var nextDeadline: MeshInstant? { nil }
}

/// What a protocol sees of the node while it handles an input, and where it
/// puts its answers.
public struct MeshContext: Sendable {
    public let now: MeshNow
    public let localID: NodeID
    /// The link graph as this node knows it.
    public let topology: MeshTopologyView
    /// Added in order; the runner performs them in that order.
    public internal(set) var actions: [MeshAction] = []

    init(now: MeshNow, localID: NodeID, topology: MeshTopologyView) {
        self.now = now
        self.localID = localID
        self.topology = topology
    }

    /// Queues `envelope` to `peer` without waiting; false when there is no live link to it.
    @discardableResult
    public mutating func send(_ envelope: Envelope, to peer: NodeID) -> Bool {
        guard let link = topology.links[peer] else { return false }
        actions.append(.send(link, envelope))
        return true
    }

    /// Queues `envelope` to `peer` past the link's capacity, keeping its place.
    @discardableResult
    public mutating func sendInOrder(_ envelope: Envelope, to peer: NodeID) -> Bool {
        guard let link = topology.links[peer] else { return false }
        actions.append(.sendInOrder(link, envelope))
        return true
    }

    /// Hands something to the application layer (performed in order with the sends).
    public mutating func effect(_ value: any Sendable) { actions.append(.effect(value)) }

    public mutating func log(_ level: Logger.Level, _ message: String) { actions.append(.log(level, message)) }
}


/// The link graph as one node knows it: its own live links, and every other
/// node's own report of its links (flooded link state). An edge between two
/// other nodes counts only when both ends report it, so a link that one end
/// has dropped is not relied on.
public struct MeshTopologyView: Sendable {
    public let localID: NodeID
    /// This node's live links (admitted, not closing), by peer.
    public private(set) var links: [NodeID: LinkID] = [:]
    /// The peers of `links`, sorted: every walk over the links goes in this order, so a run replays.
    public private(set) var linkedPeers: [NodeID] = []
    /// Each node's own report of its live links (the newest heard).
    public internal(set) var reported: [NodeID: Set<NodeID>] = [:] { didSet { version &+= 1 } }
    /// Nodes with a path from this one, and the first hop of a shortest path to each.
    public internal(set) var firstHops: [NodeID: NodeID] = [:]
    /// Moves whenever the graph changes (a link of this node, or any report):
    /// what a protocol derives from the graph stays valid while it stands still.
    public private(set) var version: UInt64 = 0

    init(localID: NodeID) { self.localID = localID }

    mutating func setLink(_ link: LinkID, to peer: NodeID) {
        if links.updateValue(link, forKey: peer) == nil {
            linkedPeers.insert(peer, at: linkedPeers.firstIndex { $0 > peer } ?? linkedPeers.count)
            version &+= 1
        }
    }

    mutating func removeLink(to peer: NodeID) {
        if links.removeValue(forKey: peer) != nil {
            linkedPeers.removeAll { $0 == peer }
            version &+= 1
        }
    }

    /// True when `a` and `b` are linked as far as this node can tell.
    public func isLinked(_ a: NodeID, _ b: NodeID) -> Bool {
        if a == localID { return links[b] != nil }
        if b == localID { return links[a] != nil }
        return reported[a]?.contains(b) == true && reported[b]?.contains(a) == true
    }

    /// The neighbours `node` is linked to, as far as this node can tell.
    public func neighbours(of node: NodeID) -> Set<NodeID> {
        if node == localID { return Set(links.keys) }
        return (reported[node] ?? []).filter { isLinked(node, $0) }
    }

    /// True when a path of agreed links leads from this node to `node`.
    public func isReachable(_ node: NodeID) -> Bool { node == localID || firstHops[node] != nil }

    /// The neighbour that starts a shortest path to `node`; nil when there is none.
    public func nextHop(to node: NodeID) -> NodeID? { firstHops[node] }

    /// This node's place on the broadcast tree of `origin`: the shortest-path
    /// tree from the origin over agreed links, breadth first, where each node's
    /// parent is the smallest id of the level above that it is linked to. Every
    /// node that holds the same graph computes the same tree, so a broadcast
    /// along it reaches each node once. Nil when no path from the origin
    /// reaches this node, or for this node's own tree (it sends to every link).
    public func broadcastTree(from origin: NodeID) -> (parent: NodeID, children: [NodeID])? {
        guard origin != localID, reported[origin] != nil || links[origin] != nil else { return nil }
        var parent: [NodeID: NodeID] = [origin: origin]
        var level = [origin]
        // Level by level, each in id order: a node's parent is the first (smallest) node above that reaches it.
        while !level.isEmpty {
            var next: [NodeID] = []
            for node in level {
                for neighbour in neighbours(of: node).sorted() where parent[neighbour] == nil {
                    parent[neighbour] = node
                    next.append(neighbour)
                }
            }
            level = next.sorted()
        }
        guard let mine = parent[localID] else { return nil }
        return (mine, linkedPeers.filter { parent[$0] == localID })
    }

    /// Recomputes `firstHops` (breadth first, ties to the smaller id).
    mutating func recomputePaths() {
        var hops: [NodeID: NodeID] = [:]
        var frontier: [NodeID] = []
        for peer in linkedPeers {
            hops[peer] = peer
            frontier.append(peer)
        }
        var index = 0
        while index < frontier.count {
            let node = frontier[index]
            index += 1
            guard let first = hops[node], let out = reported[node] else { continue }
            for next in out.sorted() where next != localID && hops[next] == nil && reported[next]?.contains(node) == true {
                hops[next] = first
                frontier.append(next)
            }
        }
        firstHops = hops
    }
}
