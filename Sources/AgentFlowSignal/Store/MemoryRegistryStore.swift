import AgentFlowCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// Node records in process memory behind a readers-writer lock: `GET /list`
/// requests read in parallel; writes (register, heartbeat, evict) are short.
/// The eviction sweep runs on its own task, never on a request.
public final class MemoryRegistryStore: NodeRegistryStore, SynchronousHeartbeatStore {
    struct State {
        var nodes: [String: StoredNode] = [:]
        /// Starts at the start time in µs, not 0: a restarted server's revisions
        /// are all newer than any a node kept from before, so its `?since=` and
        /// ETag can never match a different registry by accident.
        var revision = UInt64(max(0, Date().timeIntervalSince1970 * 1_000_000))
        /// (revision, node id) of recent changes, oldest first; bounded.
        var changeLog: [(revision: UInt64, nodeID: String)] = []
        var changeLogStart = 0

        mutating func recordChange(_ nodeID: String, limit: Int) -> UInt64 {
            revision += 1
            changeLog.append((revision, nodeID))
            if changeLog.count - changeLogStart > limit { changeLogStart += 1 }
            if changeLogStart > limit {
                changeLog.removeFirst(changeLogStart)
                changeLogStart = 0
            }
            return revision
        }

        /// The oldest revision a delta can start from.
        var oldestDeltaBase: UInt64 {
            changeLogStart < changeLog.count ? changeLog[changeLogStart].revision - 1 : revision
        }
    }

    private let state = ReadWriteLock(State())
    private let changeLogLimit: Int

    /// `changeLogLimit` bounds the changes kept for `?since=` deltas; older bases get a full list.
    public init(changeLogLimit: Int = 16_384) {
        self.changeLogLimit = changeLogLimit
    }

    public func register(_ node: StoredNode, presentedSecretDigest: String?, maxNodes: Int) async throws -> RegistrationOutcome {
        state.withWriteLock { state in
            let id = node.view.nodeID
            if let existing = state.nodes[id] {
                guard let presented = presentedSecretDigest, ConstantTime.equals(presented, existing.secretDigest) else { return .wrongSecret }
                var replacement = node
                replacement.view.registeredAt = existing.view.registeredAt
                state.nodes[id] = replacement
                return .replaced(revision: state.recordChange(id, limit: changeLogLimit))
            }
            guard state.nodes.count < maxNodes else { return .full }
            state.nodes[id] = node
            return .created(revision: state.recordChange(id, limit: changeLogLimit))
        }
    }

    public func heartbeat(nodeID: String, secretDigest: String, observedAddress: String?, now: Date) async throws -> HeartbeatOutcome {
        heartbeatNow(nodeID: nodeID, secretDigest: secretDigest, observedAddress: observedAddress, now: now)
    }

    public func heartbeatNow(nodeID: String, secretDigest: String, observedAddress: String?, now: Date) -> HeartbeatOutcome {
        state.withWriteLock { state in
            guard let stored = state.nodes[nodeID]?.secretDigest else { return .unknownNode }
            guard ConstantTime.equals(secretDigest, stored) else { return .wrongSecret }
            // Written in place through the dictionary: a copy written back costs a second hash and write per heartbeat.
            state.nodes[nodeID]!.lastSeenMillis = now.unixMillis
            guard let observedAddress, observedAddress != state.nodes[nodeID]!.view.observedAddress else { return .refreshed(revision: state.revision) }
            state.nodes[nodeID]!.view.observedAddress = observedAddress
            state.nodes[nodeID]!.view.lastSeen = Timestamp.string(now)
            return .refreshed(revision: state.recordChange(nodeID, limit: changeLogLimit))
        }
    }

    public func deregister(nodeID: String, secretDigest: String) async throws -> DeregisterOutcome {
        state.withWriteLock { state in
            guard let node = state.nodes[nodeID] else { return .unknownNode }
            guard ConstantTime.equals(secretDigest, node.secretDigest) else { return .wrongSecret }
            state.nodes[nodeID] = nil
            return .removed(revision: state.recordChange(nodeID, limit: changeLogLimit))
        }
    }

    public func changes(since: UInt64?) async throws -> RegistryChanges {
        state.withReadLock { state in
            guard let since, since >= state.oldestDeltaBase, since <= state.revision else {
                return RegistryChanges(revision: state.revision, full: true, nodes: state.nodes.values.sorted { $0.view.nodeID < $1.view.nodeID }, removed: [])
            }
            var changed = Set<String>()
            var index = state.changeLog.count - 1
            while index >= state.changeLogStart, state.changeLog[index].revision > since {
                changed.insert(state.changeLog[index].nodeID)
                index -= 1
            }
            var nodes: [StoredNode] = []
            var removed: [String] = []
            for id in changed.sorted() {
                if let node = state.nodes[id] { nodes.append(node) } else { removed.append(id) }
            }
            return RegistryChanges(revision: state.revision, full: false, nodes: nodes, removed: removed)
        }
    }

    public func evict(lastSeenBefore deadline: Date) async throws -> [String] {
        let cutoff = deadline.unixMillis
        // Find candidates under the read lock; take the write lock only when there is work.
        let expired = state.withReadLock { state in state.nodes.values.filter { $0.lastSeenMillis < cutoff }.map(\.view.nodeID) }
        guard !expired.isEmpty else { return [] }
        return state.withWriteLock { state in
            var evicted: [String] = []
            for id in expired where (state.nodes[id]?.lastSeenMillis ?? .max) < cutoff {
                state.nodes[id] = nil
                _ = state.recordChange(id, limit: changeLogLimit)
                evicted.append(id)
            }
            return evicted
        }
    }

    public func secretDigest(of nodeID: String) async throws -> String? {
        secretDigestNow(of: nodeID)
    }

    public func secretDigestNow(of nodeID: String) -> String? {
        state.withReadLock { $0.nodes[nodeID]?.secretDigest }
    }

    public func nodeCount() async throws -> Int { state.withReadLock { $0.nodes.count } }

    public func revision() async throws -> UInt64 { state.withReadLock { $0.revision } }
}
