import Foundation

/// The typed config of a master node (`role: master`). Every key, its
/// default and what is allowed are listed in docs/configuration.md.
public struct MasterConfig: Sendable {
    public var node: NodeSettings
    public var log: LogConfig
    public var transport: TransportSettings
    public var security: TransportSecurity
    public var discovery: DiscoverySettings
    public var mesh: MeshSettings
    public var api: APISettings
    /// `state:`, `monitor:`, `tasks:`, `alerts:`, `commands:`.
    public var cluster: ClusterSettings

    /// The `node:` block.
    public struct NodeSettings: Sendable {
        /// Unique, stable id. Default: derived from the host name.
        public var id: NodeID
        /// Shown on dashboards. Default: the id.
        public var displayName: String
        /// Cluster name; links between different clusters are refused. Default `agentflow`.
        public var clusterName: String
        /// Where the node keeps certificates, its peer book and sequence state. Default `./agentflow-data`.
        public var dataDirectory: String
        /// Free-form key/value labels, announced to peers. Default none.
        public var labels: [String: String]
    }

    /// The `transport:` block: which transport, where it listens, what it advertises.
    public struct TransportSettings: Sendable {
        public var module: ConfiguredTransport
        /// Default `0.0.0.0:50051`.
        public var listen: HostPort
        /// Addresses peers should dial. Default: none (discovery falls back to the listen address).
        public var advertise: [HostPort]
    }

    /// The `discovery:` block.
    public struct DiscoverySettings: Sendable {
        public var module: ConfiguredDiscovery
    }

    /// The `mesh:` block.
    public struct MeshSettings: Sendable {
        /// Direct links to keep; 0 is a full mesh. Default 0.
        public var maxPeers: Int
        /// Give up a dial after this long. Default 5s.
        public var dialTimeout: ConfigDuration
        /// Ping every link this often (RTT, liveness). Default 5s.
        public var pingInterval: ConfigDuration
        /// A link silent this long is dead. Default 20s.
        public var peerTimeout: ConfigDuration
        /// Longest wait between redials of an unreachable peer (exponential backoff with jitter from 200ms). Default 30s.
        public var reconnectMaxDelay: ConfigDuration
        /// Send each link the peers this node knows this often (and on every new link). Default 30s.
        public var peerExchangeInterval: ConfigDuration
        /// Forget a peer-book entry not seen (linked, discovered, or vouched for by a peer) for this long. Default 72h.
        public var peerBookMaxAge: ConfigDuration
    }

    /// The `api:` block: the local HTTP API and dashboard.
    public struct APISettings: Sendable {
        /// Default `127.0.0.1:8080`.
        public var listen: HostPort
        /// Bearer token; required when `listen` is not a loopback address.
        public var token: String?
    }

    /// The environment prefix for overrides: `AGENTFLOW_MASTER__MESH__MAX_PEERS=3`.
    public static let environmentPrefix = "AGENTFLOW_MASTER__"

    /// Decodes a master config document (already overlaid with the environment).
    public static func decode(from root: ConfigSection, registry: ModuleRegistry) throws(ConfigError) -> MasterConfig {
        let nodeSection = try root.section("node")
        let id = try nodeSection.value("id", default: defaultNodeID())
        let node = NodeSettings(
            id: id,
            displayName: try nodeSection.value("name", default: id.rawValue, validate: { $0.isEmpty || $0.utf8.count > 128 ? "expected 1-128 bytes" : nil }),
            clusterName: try nodeSection.value("cluster", default: "agentflow", validate: { NodeID.isValid($0) ? nil : "expected a cluster name: \(NodeID.rules)" }),
            dataDirectory: try nodeSection.filePath("data_dir", default: "./agentflow-data", mustExist: false)!,
            labels: Dictionary(uniqueKeysWithValues: try nodeSection.stringMap("labels", validateKey: Self.labelKeyProblem).map { ($0.key, $0.value) })
        )
        try nodeSection.finish()

        let log = try LogConfig.decode(from: root.section("log"))

        let transportSection = try root.section("transport")
        let transportName = try transportSection.value("kind", default: registry.defaultTransport ?? "none")
        let transportRegistration = try ModuleRegistry.lookUp(
            transportName, in: registry.transports, kind: "transport",
            path: transportSection.path.appending(key: "kind"), source: transportSection.source)
        let listen = try transportSection.value("listen", default: HostPort(host: "0.0.0.0", port: 50051))
        let advertise: [HostPort] = try transportSection.list("advertise", default: [])
        for (index, address) in advertise.enumerated() where address.port == 0 || address.host == "0.0.0.0" || address.host == "::" {
            throw ConfigError(
                .invalidValue, path: transportSection.path.appending(key: "advertise").appending(index: index), value: address.description,
                expected: "an advertised address must be dialable: a concrete host and a port from 1 to 65535", source: transportSection.source)
        }
        let transport = TransportSettings(module: try transportRegistration.configure(from: transportSection), listen: listen, advertise: advertise)

        let security = try TransportSecurity.decode(from: root.section("tls"), dataDirectory: node.dataDirectory)

        let discoverySection = try root.section("discovery")
        let discoveryName = try discoverySection.value("kind", default: registry.defaultDiscovery ?? "none")
        let discoveryRegistration = try ModuleRegistry.lookUp(
            discoveryName, in: registry.discoveries, kind: "discovery backend",
            path: discoverySection.path.appending(key: "kind"), source: discoverySection.source)
        let discovery = DiscoverySettings(module: try discoveryRegistration.configure(from: discoverySection))

        let meshSection = try root.section("mesh")
        let mesh = MeshSettings(
            maxPeers: try meshSection.value("max_peers", default: 0, in: 0...1_000),
            dialTimeout: try meshSection.value("dial_timeout", default: .seconds(5), in: .milliseconds(100) ... .seconds(120)),
            pingInterval: try meshSection.value("ping_interval", default: .seconds(5), in: .milliseconds(100) ... .seconds(300)),
            peerTimeout: try meshSection.value("peer_timeout", default: .seconds(20), in: .milliseconds(500) ... .seconds(3_600)),
            reconnectMaxDelay: try meshSection.value("reconnect_max_delay", default: .seconds(30), in: .milliseconds(200) ... .seconds(3_600)),
            peerExchangeInterval: try meshSection.value("peer_exchange_interval", default: .seconds(30), in: .milliseconds(100) ... .seconds(3_600)),
            peerBookMaxAge: try meshSection.value("peer_book_max_age", default: .seconds(72 * 3_600), in: .seconds(1) ... .seconds(365 * 24 * 3_600))
        )
        if mesh.peerTimeout <= mesh.pingInterval {
            throw ConfigError(
                .invalidValue, path: meshSection.path.appending(key: "peer_timeout"), value: mesh.peerTimeout.configText,
                expected: "must be longer than mesh.ping_interval (\(mesh.pingInterval.configText)), or every link would time out between pings",
                source: meshSection.source)
        }
        try meshSection.finish()

        let apiSection = try root.section("api")
        let api = APISettings(
            listen: try apiSection.value("listen", default: HostPort(host: "127.0.0.1", port: 8080)),
            token: try apiSection.optionalSecret("token")
        )
        if !api.listen.isLoopback && (api.token ?? "").isEmpty {
            throw ConfigError(
                .missingKey, path: apiSection.path.appending(key: "token"), value: nil,
                expected: "api.listen is \(api.listen), which is not loopback: set api.token so only holders of it can issue commands",
                source: apiSection.source)
        }
        try apiSection.finish()

        let cluster = try ClusterSettings.decode(from: root)

        return MasterConfig(node: node, log: log, transport: transport, security: security, discovery: discovery, mesh: mesh, api: api, cluster: cluster)
    }

    /// The host name made into a valid node id, so a node with no config gets a sensible one.
    static func defaultNodeID() -> NodeID {
        let host = ProcessInfo.processInfo.hostName.lowercased()
        let cleaned = String(host.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") ? $0 : "-" }.prefix(63))
        return NodeID(cleaned) ?? NodeID("master")!
    }

    static func labelKeyProblem(_ key: String) -> String? {
        NodeID.isValid(key.lowercased()) && key.utf8.count <= 63 ? nil : "label keys are \(NodeID.rules)"
    }
}
