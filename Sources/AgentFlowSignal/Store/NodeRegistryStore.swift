import AgentFlowCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// A node record as stored: the public view plus the digest of its secret.
public struct StoredNode: Sendable, Hashable, Codable {
    public var view: NodeView
    /// Hex SHA-256 of the node's secret. Also the node's STUN password (RFC 8489 short-term credential).
    public var secretDigest: String
    /// Unix milliseconds of the last registration or heartbeat; eviction reads this.
    public var lastSeenMillis: Int64

    enum CodingKeys: String, CodingKey {
        case view, secretDigest = "secret_digest", lastSeenMillis = "last_seen_ms"
    }
}

/// What registration did.
public enum RegistrationOutcome: Sendable {
    case created(revision: UInt64)
    case replaced(revision: UInt64)
    /// The id is taken and the secret presented does not match.
    case wrongSecret
    /// `registry.max_nodes` reached.
    case full
}

public enum HeartbeatOutcome: Sendable, Equatable {
    case refreshed(revision: UInt64)
    case unknownNode
    case wrongSecret
}

public enum DeregisterOutcome: Sendable, Equatable {
    case removed(revision: UInt64)
    case unknownNode
    case wrongSecret
}

/// A consistent read of the registry for `GET /list`.
public struct RegistryChanges: Sendable {
    public var revision: UInt64
    /// True when `nodes` is the whole registry.
    public var full: Bool
    public var nodes: [StoredNode]
    public var removed: [String]
}

/// Where node records live. `memory` for one server; `redis` for several
/// servers sharing one Redis. Implementations are safe to call concurrently.
///
/// Revisions: every registration, endpoint change, deregistration and
/// eviction increments the registry's revision and is logged, so a poller
/// can ask for what changed since the revision it holds. Heartbeats that
/// change nothing but `last_seen` do not, so steady-state polls stay empty.
public protocol NodeRegistryStore: Sendable {
    /// Creates or replaces a node. An existing id requires `presentedSecretDigest` to match.
    func register(_ node: StoredNode, presentedSecretDigest: String?, maxNodes: Int) async throws -> RegistrationOutcome
    /// Refreshes `last_seen` (and the observed address, when it changed).
    func heartbeat(nodeID: String, secretDigest: String, observedAddress: String?, now: Date) async throws -> HeartbeatOutcome
    func deregister(nodeID: String, secretDigest: String) async throws -> DeregisterOutcome
    /// Everything (`since` nil or too old) or the changes after `since`.
    func changes(since: UInt64?) async throws -> RegistryChanges
    /// Removes nodes last seen before `deadline`; returns their ids.
    func evict(lastSeenBefore deadline: Date) async throws -> [String]
    /// The stored secret digest of a node (STUN MESSAGE-INTEGRITY key), or nil.
    func secretDigest(of nodeID: String) async throws -> String?
    func nodeCount() async throws -> Int
    /// The current revision (cheap: answers 304s).
    func revision() async throws -> UInt64
}

/// A store whose heartbeat path never blocks or suspends (memory), so the
/// STUN responder can run it on the UDP event loop without a hop to a task.
public protocol SynchronousHeartbeatStore: Sendable {
    func secretDigestNow(of nodeID: String) -> String?
    func heartbeatNow(nodeID: String, secretDigest: String, observedAddress: String?, now: Date) -> HeartbeatOutcome
}

extension Date {
    var unixMillis: Int64 { Int64((timeIntervalSince1970 * 1_000).rounded()) }
}
