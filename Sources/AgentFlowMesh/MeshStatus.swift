public import AgentFlowCore

/// One peer as `GET /api/cluster/status` shows it.
public struct PeerStatus: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable {
        /// A live link.
        case connected
        /// A dial is in progress.
        case connecting
        /// The last dial failed; waiting `next_attempt_in_ms` before the next.
        case backoff
        /// Known, not linked, not being dialled (not a preferred neighbour under `max_peers`, or no endpoint).
        case idle
    }

    public var nodeID: String
    public var name: String
    public var state: State
    /// True while a direct link carries this peer's traffic.
    public var direct: Bool
    public var transport: String
    public var direction: LinkDirection?
    public var remoteAddress: String?
    /// Addresses this node would dial, freshest first.
    public var endpoints: [String]
    public var rttMilliseconds: Double?
    public var connectedSince: String?
    public var lastConnected: String?
    public var lastDisconnected: String?
    public var lastError: String?
    /// Failed attempts since the last good link.
    public var failures: Int
    public var nextAttemptInMilliseconds: Int?
    public var messagesReceived: UInt64?
    public var messagesSent: UInt64?
    /// How this node knows the peer: discovery, peer_book, peer_exchange, inbound, dialled.
    public var sources: [String]
    public var labels: [String: String]
    /// What the peer's probes said about reaching it from outside; nil when nothing was heard.
    public var reachability: PeerReachability?

    enum CodingKeys: String, CodingKey {
        case reachability
        case nodeID = "node_id", name, state, direct, transport, direction, remoteAddress = "remote_address", endpoints
        case rttMilliseconds = "rtt_ms", connectedSince = "connected_since", lastConnected = "last_connected"
        case lastDisconnected = "last_disconnected", lastError = "last_error", failures
        case nextAttemptInMilliseconds = "next_attempt_in_ms", messagesReceived = "messages_received", messagesSent = "messages_sent"
        case sources, labels
    }
}

/// The local node as `GET /api/cluster/status` shows it.
public struct LocalStatus: Codable, Sendable, Hashable {
    public var nodeID: String
    public var name: String
    public var cluster: String
    public var incarnation: UInt64
    public var startedAt: String
    public var version: String
    /// The preferred transport (the first of `transports`).
    public var transport: String
    /// Every transport this node listens on, in its order of preference.
    public var transports: [String]
    /// The preferred transport's bound address.
    public var listen: String?
    /// Every bound listener, as `kind://host:port`.
    public var listening: [String]
    public var advertised: [String]
    public var tls: Bool
    public var maxPeers: Int
    public var discovery: DiscoveryStatus
    public var labels: [String: String]
    /// What this node's probes found, in short (what peers are told); nil before they ran.
    public var reachability: PeerReachability?
    /// The latest report of each probe the master runs (`probes.run`), in order.
    public var probes: [ProbeReport]
    /// This node's own certificate: when it expires; nil without TLS.
    public var certificate: CertificateStatus?

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", name, cluster, incarnation, startedAt = "started_at", version, transport, transports, listen, listening, advertised, tls
        case maxPeers = "max_peers", discovery, labels, reachability, probes, certificate
    }
}

/// This node's certificate as the status shows it.
public struct CertificateStatus: Codable, Sendable, Hashable {
    public var file: String
    /// Unix seconds.
    public var notAfterUnix: Int64
    public var notAfter: String
    /// Until `notAfter`, at the time of the status (negative: expired).
    public var secondsLeft: Int64

    public init(file: String, notAfterUnix: Int64, nowUnix: Int64) {
        self.file = file
        self.notAfterUnix = notAfterUnix
        notAfter = Timestamp.string(unixMicros: notAfterUnix * 1_000_000)
        secondsLeft = notAfterUnix - nowUnix
    }

    enum CodingKeys: String, CodingKey {
        case file, notAfterUnix = "not_after_unix", notAfter = "not_after", secondsLeft = "seconds_left"
    }
}

public struct DiscoveryStatus: Codable, Sendable, Hashable {
    public var kind: String
    /// `healthy`, `degraded`, `starting` or `failed`.
    public var health: String
    public var detail: String?
}

/// `GET /api/cluster/status`.
public struct MeshStatus: Codable, Sendable, Hashable {
    public var local: LocalStatus
    public var peers: [PeerStatus]
    public var linkCount: Int

    enum CodingKeys: String, CodingKey {
        case local, peers, linkCount = "link_count"
    }
}
