#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
    public var probes: ProbeSettings

    /// The `probes:` block: what the master checks about its own reachability.
    public struct ProbeSettings: Sendable {
        /// The probes this config names — in `run`, or with a `probes.<name>`
        /// block — with their options. `agentflow probe` configures any other
        /// registered probe from its defaults when asked for it.
        public var modules: [String: ConfiguredProbe]
        /// `run:` — the probes the master runs at start and every `interval`.
        /// Default: `stun` and `reach` when discovery is `signal` (the cluster's
        /// signal server answers both), else none.
        public var run: [String]
        /// Default 10m.
        public var interval: ConfigDuration
        /// Wait after start before the first round, so discovery has registered the node. Default 5s.
        public var initialDelay: ConfigDuration
        /// One probe's budget. Default 20s.
        public var timeout: ConfigDuration
    }

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

    /// The `transport:` block: which transports, where each listens, what it advertises.
    public struct TransportSettings: Sendable {
        /// `kind:` — one name or a list, in the node's order of preference. Default: the registry's default.
        public var modules: [ConfiguredTransport]
        /// `listen:` — one address per transport, in the same order. Default `0.0.0.0:50051`.
        public var listeners: [HostPort]
        /// The plain `host:port` entries of `advertise:` (allowed with one transport only).
        public var advertise: [HostPort]
        /// Every `advertise:` entry, each with its transport (`kind://host:port`,
        /// or a plain entry of the only transport). Default none: each transport
        /// advertises its bound address (a wildcard host resolved to this host's addresses).
        public var advertisedEndpoints: [DiscoveredEndpoint]

        /// The preferred transport.
        public var module: ConfiguredTransport { modules[0] }
        /// The preferred transport's listen address.
        public var listen: HostPort { listeners[0] }
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

        let transport = try TransportSettings.decode(from: root.section("transport"), registry: registry)

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
            pingInterval: try meshSection.value("ping_interval", default: .seconds(1), in: .milliseconds(100) ... .seconds(300)),
            peerTimeout: try meshSection.value("peer_timeout", default: .seconds(4), in: .milliseconds(500) ... .seconds(3_600)),
            reconnectMaxDelay: try meshSection.value("reconnect_max_delay", default: .seconds(30), in: .milliseconds(200) ... .seconds(3_600)),
            peerExchangeInterval: try meshSection.value("peer_exchange_interval", default: .seconds(30), in: .milliseconds(100) ... .seconds(3_600)),
            peerBookMaxAge: try meshSection.value("peer_book_max_age", default: .seconds(72 * 3_600), in: .seconds(1) ... .seconds(365 * 24 * 3_600))
        )
        if mesh.peerTimeout.duration < mesh.pingInterval.duration * 2 {
            throw ConfigError(
                .invalidValue, path: meshSection.path.appending(key: "peer_timeout"), value: mesh.peerTimeout.configText,
                expected: "at least twice mesh.ping_interval (\(mesh.pingInterval.configText)): a link silent for half of peer_timeout is suspected, so a healthy one must be heard from before that",
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

        let probes = try ProbeSettings.decode(from: root.section("probes"), registry: registry, discoveryName: discoveryName)

        return MasterConfig(node: node, log: log, transport: transport, security: security, discovery: discovery, mesh: mesh, api: api, cluster: cluster,
                            probes: probes)
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

extension MasterConfig.TransportSettings {
    static func decode(from section: ConfigSection, registry: ModuleRegistry) throws(ConfigError) -> Self {
        let kindPath = section.path.appending(key: "kind")
        let names: [String] = try section.list("kind", default: [registry.defaultTransport ?? "none"])
        guard !names.isEmpty else {
            throw ConfigError(.invalidValue, path: kindPath, value: "[]", expected: "name at least one transport", source: section.source)
        }
        if let repeated = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw ConfigError(.invalidValue, path: kindPath, value: repeated, expected: "each transport once", source: section.source)
        }
        var modules: [ConfiguredTransport] = []
        for (index, name) in names.enumerated() {
            let registration = try ModuleRegistry.lookUp(
                name, in: registry.transports, kind: "transport",
                path: names.count == 1 ? kindPath : kindPath.appending(index: index), source: section.source)
            // Every module reads its keys from this one block; unread keys are refused once all have read.
            modules.append(try registration.configure(from: section, finishing: false))
        }

        let listenPath = section.path.appending(key: "listen")
        var listeners: [HostPort] = try section.list("listen", default: [HostPort(host: "0.0.0.0", port: 50051)])
        if listeners.count == 1 && names.count > 1 {
            guard listeners[0].port == 0 else {
                throw ConfigError(
                    .invalidValue, path: listenPath, value: listeners[0].description,
                    expected: "transport.kind lists \(names.count) transports (\(names.joined(separator: ", "))): give one listen address each, in the same order, e.g. [0.0.0.0:50051, 0.0.0.0:50052]",
                    source: section.source)
            }
            listeners = Array(repeating: listeners[0], count: names.count)
        }
        guard listeners.count == names.count else {
            throw ConfigError(
                .invalidValue, path: listenPath, value: ConfigSection.flowList(listeners.map(\.description)),
                expected: "one listen address per transport in transport.kind (\(names.count))", source: section.source)
        }

        let advertisePath = section.path.appending(key: "advertise")
        let entries: [String] = try section.list("advertise", default: [])
        var plain: [HostPort] = []
        var endpoints: [DiscoveredEndpoint] = []
        for (index, entry) in entries.enumerated() {
            let path = advertisePath.appending(index: index)
            let endpoint: DiscoveredEndpoint
            if entry.contains("://") {
                guard let parsed = DiscoveredEndpoint(parsing: entry) else {
                    throw ConfigError(.invalidValue, path: path, value: entry, expected: "kind://host:port with a port from 1 to 65535", source: section.source)
                }
                guard names.contains(parsed.transport) else {
                    throw ConfigError(.invalidValue, path: path, value: entry,
                                      expected: "a transport this node listens on: \(names.joined(separator: ", "))", source: section.source)
                }
                endpoint = parsed
            } else {
                guard let address = HostPort(parsing: entry) else {
                    throw ConfigError(.invalidValue, path: path, value: entry,
                                      expected: "host:port, or kind://host:port (IPv6 as [addr]:port)", source: section.source)
                }
                guard names.count == 1 else {
                    throw ConfigError(.invalidValue, path: path, value: entry,
                                      expected: "with several transports, say which one: \(names.map { "\($0)://\(address)" }.joined(separator: " or "))",
                                      source: section.source)
                }
                plain.append(address)
                endpoint = DiscoveredEndpoint(transport: names[0], address: address)
            }
            if endpoint.address.port == 0 || endpoint.address.host == "0.0.0.0" || endpoint.address.host == "::" {
                throw ConfigError(
                    .invalidValue, path: path, value: entry,
                    expected: "an advertised address must be dialable: a concrete host and a port from 1 to 65535", source: section.source)
            }
            endpoints.append(endpoint)
        }
        try section.finish()
        return Self(modules: modules, listeners: listeners, advertise: plain, advertisedEndpoints: endpoints)
    }
}

extension MasterConfig.ProbeSettings {
    static func decode(from section: ConfigSection, registry: ModuleRegistry, discoveryName: String) throws(ConfigError) -> Self {
        let defaultRun = discoveryName == "signal" ? ["stun", "reach"].filter { registry.probes[$0] != nil } : []
        let runPath = section.path.appending(key: "run")
        let run: [String] = try section.list("run", default: defaultRun)
        for (index, name) in run.enumerated() where registry.probes[name] == nil {
            _ = try ModuleRegistry.lookUp(name, in: registry.probes, kind: "probe", path: runPath.appending(index: index), source: section.source)
        }
        var modules: [String: ConfiguredProbe] = [:]
        for (name, registration) in registry.probes.sorted(by: { $0.key < $1.key }) where run.contains(name) || section.contains(name) {
            modules[name] = try registration.configure(from: try section.section(name))
        }
        let settings = Self(
            modules: modules, run: run,
            interval: try section.value("interval", default: .seconds(600), in: .seconds(10) ... .seconds(7 * 86_400)),
            initialDelay: try section.value("initial_delay", default: .seconds(5), in: .seconds(0) ... .seconds(3_600)),
            timeout: try section.value("timeout", default: .seconds(20), in: .seconds(1) ... .seconds(600)))
        try section.finish()
        return settings
    }
}
