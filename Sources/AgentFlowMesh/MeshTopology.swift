public import AgentFlowCore

/// Which peers a node keeps direct links to.
///
/// With `maxPeers == 0` (the default) every node links to every other: a full
/// mesh. With `maxPeers = k` the node ids are laid on a ring in sorted order
/// and each node prefers its ring neighbours at offsets +1, -1, +2, -2, … (k of
/// them). The ring makes the graph connected for any k ≥ 1, every node computes
/// the same answer from the same membership, and a link is kept while either
/// end prefers it, so both ends agree on which links to keep. A node holds k
/// links (k+1 when k is odd: the extra one a neighbour prefers).
public enum MeshTopology {
    /// The peers `local` prefers, among `members` (which may include `local`).
    public static func preferredPeers(of local: NodeID, among members: Set<NodeID>, maxPeers: Int) -> Set<NodeID> {
        var others = members
        others.remove(local)
        guard maxPeers > 0, others.count > maxPeers else { return others }
        let ring = (others.union([local])).sorted()
        let index = ring.firstIndex(of: local)!
        var chosen: Set<NodeID> = []
        var distance = 1
        while chosen.count < maxPeers && distance < ring.count {
            for offset in [distance, -distance] where chosen.count < maxPeers {
                let neighbour = ring[((index + offset) % ring.count + ring.count) % ring.count]
                if neighbour != local { chosen.insert(neighbour) }
            }
            distance += 1
        }
        return chosen
    }

    /// True when a link between `a` and `b` should be kept: either end prefers it.
    public static func keepsLink(_ a: NodeID, _ b: NodeID, members: Set<NodeID>, maxPeers: Int) -> Bool {
        guard maxPeers > 0 else { return true }
        let all = members.union([a, b])
        return preferredPeers(of: a, among: all, maxPeers: maxPeers).contains(b)
            || preferredPeers(of: b, among: all, maxPeers: maxPeers).contains(a)
    }

    /// When both nodes dialled each other at once, the link dialled by the
    /// smaller node id survives; both ends decide alike without talking.
    public static func survivingDialler(_ a: NodeID, _ b: NodeID) -> NodeID { min(a, b) }
}
