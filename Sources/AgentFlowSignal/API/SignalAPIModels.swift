import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A node as `GET /list` shows it: never its secret.
public struct NodeView: Codable, Sendable, Hashable {
    public var nodeID: String
    public var name: String
    public var endpoints: [EndpointView]
    /// The source address the signal server saw the node's last registration or heartbeat from.
    public var observedAddress: String?
    public var labels: [String: String]
    public var version: String
    /// RFC 3339, milliseconds.
    public var registeredAt: String
    /// RFC 3339, milliseconds; as of the record's last change (heartbeats do not bump revisions).
    public var lastSeen: String

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", name, endpoints, observedAddress = "observed_address", labels, version
        case registeredAt = "registered_at", lastSeen = "last_seen"
    }
}

public struct EndpointView: Codable, Sendable, Hashable {
    public var transport: String
    public var host: String
    public var port: Int
}

/// `POST /register` answer.
public struct RegisterResponse: Codable, Sendable {
    public var nodeID: String
    /// The per-node secret: needed for heartbeat, deregister and re-registration. Only sent when issued.
    public var secret: String?
    public var created: Bool
    public var ttlSeconds: Double
    public var heartbeatIntervalSeconds: Double
    public var observedAddress: String?
    public var revision: UInt64
    /// UDP port answering STUN binding requests (also a heartbeat path), when enabled.
    public var stunPort: Int?
    /// The least time between this node's `/list` fetches (the fleet's share of `registry.list_polls_per_second`).
    public var minPollIntervalSeconds: Int

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", secret, created, ttlSeconds = "ttl_seconds", heartbeatIntervalSeconds = "heartbeat_interval_seconds"
        case observedAddress = "observed_address", revision, stunPort = "stun_port", minPollIntervalSeconds = "min_poll_interval_seconds"
    }
}

/// `POST /heartbeat` answer.
public struct HeartbeatResponse: Codable, Sendable {
    public var nodeID: String
    public var ttlSeconds: Double
    /// The registry's revision: a node whose list is at this revision need not poll.
    public var revision: UInt64
    public var minPollIntervalSeconds: Int

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", ttlSeconds = "ttl_seconds", revision, minPollIntervalSeconds = "min_poll_interval_seconds"
    }
}

/// `GET /list` answer: the full set, or what changed since `?since=`.
public struct ListResponse: Codable, Sendable {
    public var revision: UInt64
    /// True when `nodes` is every node (no `since`, or `since` older than the change log).
    public var full: Bool
    public var nodes: [NodeView]
    /// Ids removed since `since` (empty when `full`).
    public var removed: [String]
}

/// The body of every error: `{"error": {"code": "...", "message": "..."}}`.
public struct ErrorResponse: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
    }

    public var error: Detail
}
