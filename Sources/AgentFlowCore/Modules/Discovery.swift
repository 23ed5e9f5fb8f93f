public import Logging

/// How a node finds its peers: a signal server, a static file, an in-memory directory.
///
/// `peerSets(announcing:)` yields snapshots over the node's life. Meaning of what it yields:
/// - each element is the **complete** set the backend knows now, not a delta;
/// - an **empty set** means "no peers known" — the mesh keeps live links
///   anyway (discovery finds peers; it never tears links down);
/// - a **transient failure** (signal server unreachable) is an element with
///   `health = .degraded(reason)` that repeats the last known peers;
/// - the stream **ends** normally when the backend has nothing more to say
///   (the mesh keeps the last set), and **throws** only for a fatal problem
///   (a config or file that cannot work) that the operator must fix.
/// - a slow consumer must never make the backend buffer without limit: keep
///   only the newest set (`bufferingPolicy: .bufferingNewest(1)`).
/// Cancelling the consuming task stops the backend (and deregisters, where that applies).
///
/// `DiscoveryConformance` in the `AgentFlowTesting` product checks each of these.
public protocol Discovery: Sendable {
    var name: String { get }
    func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error>
}

/// What this node tells discovery about itself.
public struct LocalAnnouncement: Sendable, Hashable {
    public var nodeID: NodeID
    public var displayName: String
    /// Reachable addresses, per transport.
    public var endpoints: [DiscoveredEndpoint]
    public var labels: [String: String]
    public var softwareVersion: String

    public init(nodeID: NodeID, displayName: String, endpoints: [DiscoveredEndpoint], labels: [String: String], softwareVersion: String = AgentFlowVersion.current) {
        self.nodeID = nodeID
        self.displayName = displayName
        self.endpoints = endpoints
        self.labels = labels
        self.softwareVersion = softwareVersion
    }
}

public struct DiscoveredEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var transport: String
    public var address: HostPort

    public init(transport: String, address: HostPort) {
        self.transport = transport
        self.address = address
    }

    public var description: String { "\(transport)://\(address)" }

    /// Parses `transport://host:port` (a concrete port; transport names follow node-id rules).
    public init?(parsing text: String) {
        guard let separator = text.firstRange(of: "://") else { return nil }
        let transport = String(text[..<separator.lowerBound])
        guard NodeID.isValid(transport), let address = HostPort(parsing: String(text[separator.upperBound...])), address.port != 0 else { return nil }
        self.init(transport: transport, address: address)
    }
}

/// A peer as discovery knows it.
public struct DiscoveredPeer: Sendable, Hashable {
    public var nodeID: NodeID
    public var displayName: String
    public var endpoints: [DiscoveredEndpoint]
    public var labels: [String: String]

    public init(nodeID: NodeID, displayName: String? = nil, endpoints: [DiscoveredEndpoint], labels: [String: String] = [:]) {
        self.nodeID = nodeID
        self.displayName = displayName ?? nodeID.rawValue
        self.endpoints = endpoints
        self.labels = labels
    }
}

/// One snapshot from a discovery backend.
public struct PeerSetUpdate: Sendable, Hashable {
    public enum Health: Sendable, Hashable {
        case healthy
        /// The backend could not refresh; `peers` is the last known set.
        case degraded(reason: String)
    }

    /// Never includes the local node.
    public var peers: [DiscoveredPeer]
    /// Addresses where some master listens, whose node id the backend cannot
    /// know (a DNS name resolves to addresses only). The mesh dials each with
    /// no expected identity, learns who answers from the certificate-checked
    /// `Hello`, and from then on treats the address as that peer's. An
    /// address that leads back to this node is remembered and not dialled again.
    public var unidentified: [DiscoveredEndpoint]
    public var health: Health
    /// True when the set is an operator's list (a peers file): a peer that
    /// leaves a healthy set was removed on purpose, and the mesh closes its
    /// link and forgets it. False when absence means only "not heard from
    /// lately" (a signal server evicting a silent node): live links stay.
    public var isAuthoritative: Bool

    public init(peers: [DiscoveredPeer], unidentified: [DiscoveredEndpoint] = [], health: Health = .healthy, isAuthoritative: Bool = false) {
        self.peers = peers
        self.unidentified = unidentified
        self.health = health
        self.isAuthoritative = isAuthoritative
    }
}

/// Everything a discovery module needs for this node.
public struct DiscoveryContext: Sendable {
    public var localNodeID: NodeID
    /// The node's data folder, for backends that persist state.
    public var dataDirectory: String
    /// The node's logger (it carries `node=`).
    public var logger: Logger
    /// The transports this node speaks, in its order of preference, for
    /// backends that must name one for addresses they find (DNS).
    public var transports: [String]

    public init(localNodeID: NodeID, dataDirectory: String, logger: Logger = Logger(label: "agentflow.discovery"), transports: [String] = []) {
        self.localNodeID = localNodeID
        self.dataDirectory = dataDirectory
        self.logger = logger
        self.transports = transports
    }
}

/// A discovery backend as a registrable module.
public protocol DiscoveryModule: SendableMetatype {
    associatedtype Options: Sendable
    static var name: String { get }
    static var summary: String { get }
    /// Reads this module's keys from the `discovery:` block (`kind` is the core's).
    static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options
    static func makeDiscovery(options: Options, context: DiscoveryContext) throws -> any Discovery
}
