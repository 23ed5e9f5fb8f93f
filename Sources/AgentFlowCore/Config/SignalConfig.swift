/// The typed config of a signal server (`role: signal`). Every key, its
/// default and what is allowed are listed in docs/configuration.md.
public struct SignalConfig: Sendable {
    public var log: LogConfig
    public var http: HTTPSettings
    public var auth: AuthSettings
    public var store: StoreSettings
    public var registry: RegistrySettings
    public var stun: STUNSettings
    public var reach: ReachSettings

    /// The `http:` block: the REST API.
    public struct HTTPSettings: Sendable {
        /// Default `127.0.0.1:7070`; a public pod sets `0.0.0.0:7070` (and then needs `auth.token`).
        public var listen: HostPort
        /// Origins allowed by CORS; `*` allows any. Default none.
        public var corsAllowedOrigins: [String]
        /// Larger request bodies get 413. Default 65536.
        public var maxBodyBytes: Int
        /// Connections idle this long are closed (slowloris). Default 30s.
        public var idleTimeout: ConfigDuration
    }

    /// The `auth:` block.
    public struct AuthSettings: Sendable {
        /// The cluster token every request but `/healthz` must carry as `Bearer`.
        /// Required unless `http.listen` is loopback. Default none.
        public var token: String?
    }

    /// The `store:` block: where node records live.
    public struct StoreSettings: Sendable {
        public enum Kind: String, ConfigEnum {
            case memory
            case redis
        }

        /// Default `memory`.
        public var kind: Kind
        /// For `redis`: default `redis://127.0.0.1:6379/0`.
        public var redisURL: String
        /// For `redis`: prefix of every key, so clusters can share a server. Default `agentflow`.
        public var redisKeyPrefix: String
    }

    /// The `registry:` block: record lifetime and limits.
    public struct RegistrySettings: Sendable {
        /// A node silent this long is evicted. Default 30s.
        public var ttl: ConfigDuration
        /// How often evictions run. Default 5s.
        public var sweepInterval: ConfigDuration
        /// Default 10000.
        public var maxNodes: Int
        /// Default 32.
        public var maxLabels: Int
        /// Bytes per label key plus value. Default 256.
        public var maxLabelBytes: Int
        /// Default 8.
        public var maxEndpoints: Int
        /// The `/list` fetches a second the whole fleet may send. Nodes are told the
        /// least time between their fetches (`min_poll_interval_seconds` = nodes ÷
        /// this), so the server's list load stays bounded however large the fleet
        /// or busy the registry. Default 20.
        public var listPollsPerSecond: Int
    }

    /// The `stun:` block: STUN binding requests and UDP heartbeats.
    public struct STUNSettings: Sendable {
        /// Default true.
        public var enabled: Bool
        /// Default `127.0.0.1:3478`.
        public var listen: HostPort
        /// A second IP address and port of this host (`IP2:P2`) for RFC 5780 NAT
        /// behaviour discovery. With it the responder binds four sockets — the
        /// listen address, `IP:P2`, `IP2:P`, `IP2:P2` — answers with OTHER-ADDRESS
        /// and RESPONSE-ORIGIN, and honours CHANGE-REQUEST and RESPONSE-PORT.
        /// Unset (default): behaviour discovery is off and a CHANGE-REQUEST asking
        /// for a change gets a 420 (unknown attribute) error answer.
        public var alternate: HostPort?
    }

    /// The `reach:` block: `POST /reach`, the dial-back that tells a node
    /// whether the outside can reach its P2P port.
    public struct ReachSettings: Sendable {
        /// Default true.
        public var enabled: Bool
        /// Least time between one node's reach checks. Default 10s.
        public var minInterval: ConfigDuration
        /// How long one dial waits for a connection and for a TLS answer. Default 3s.
        public var timeout: ConfigDuration
        /// Checks in flight at once, over all nodes; more are answered 503. Default 16.
        public var maxConcurrent: Int
    }

    public static let environmentPrefix = "AGENTFLOW_SIGNAL__"

    /// A dotted IPv4 or an IPv6 literal that is not a wildcard.
    static func isLiteralIP(_ host: String) -> Bool {
        if host == "0.0.0.0" || host == "::" { return false }
        if host.contains(":") { return host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." } }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isNumber) && Int(part)! <= 255 }
    }

    public static func decode(from root: ConfigSection) throws(ConfigError) -> SignalConfig {
        let log = try LogConfig.decode(from: root.section("log"))

        let httpSection = try root.section("http")
        let http = HTTPSettings(
            listen: try httpSection.value("listen", default: HostPort(host: "127.0.0.1", port: 7070)),
            corsAllowedOrigins: try httpSection.list("cors_allowed_origins", default: []),
            maxBodyBytes: try httpSection.value("max_body_bytes", default: 65_536, in: 1_024...(16 << 20)),
            idleTimeout: try httpSection.value("idle_timeout", default: .seconds(30), in: .seconds(1) ... .seconds(3_600))
        )
        try httpSection.finish()

        let authSection = try root.section("auth")
        let auth = AuthSettings(token: try authSection.optionalSecret("token"))
        if let token = auth.token, token.utf8.count < 16 {
            throw ConfigError(
                .invalidValue, path: authSection.path.appending(key: "token"), value: String(repeating: "*", count: token.count),
                expected: "the cluster token must be at least 16 characters (e.g. `openssl rand -hex 24`)", source: authSection.source)
        }
        if !http.listen.isLoopback && auth.token == nil {
            throw ConfigError(
                .missingKey, path: authSection.path.appending(key: "token"), value: nil,
                expected: "http.listen is \(http.listen), which is not loopback: a public signal server needs a cluster token",
                source: authSection.source)
        }
        try authSection.finish()

        let storeSection = try root.section("store")
        let store = StoreSettings(
            kind: try storeSection.value("kind", default: .memory),
            redisURL: try storeSection.value("redis_url", default: "redis://127.0.0.1:6379/0", validate: {
                $0.hasPrefix("redis://") ? nil : "expected a URL redis://host:port/db"
            }),
            redisKeyPrefix: try storeSection.value("key_prefix", default: "agentflow", validate: {
                NodeID.isValid($0) ? nil : "expected \(NodeID.rules)"
            })
        )
        try storeSection.finish()

        let registrySection = try root.section("registry")
        let registry = RegistrySettings(
            ttl: try registrySection.value("ttl", default: .seconds(30), in: .seconds(1) ... .seconds(86_400)),
            sweepInterval: try registrySection.value("sweep_interval", default: .seconds(5), in: .milliseconds(100) ... .seconds(3_600)),
            maxNodes: try registrySection.value("max_nodes", default: 10_000, in: 1...1_000_000),
            maxLabels: try registrySection.value("max_labels", default: 32, in: 0...1_024),
            maxLabelBytes: try registrySection.value("max_label_bytes", default: 256, in: 8...65_536),
            maxEndpoints: try registrySection.value("max_endpoints", default: 8, in: 1...64),
            listPollsPerSecond: try registrySection.value("list_polls_per_second", default: 20, in: 1...100_000)
        )
        try registrySection.finish()

        let stunSection = try root.section("stun")
        let stun = STUNSettings(
            enabled: try stunSection.value("enabled", default: true),
            listen: try stunSection.value("listen", default: HostPort(host: "127.0.0.1", port: 3478)),
            alternate: try stunSection.optionalValue("alternate")
        )
        if let alternate = stun.alternate {
            let path = stunSection.path.appending(key: "alternate")
            func refuse(_ why: String) -> ConfigError {
                ConfigError(.invalidValue, path: path, value: alternate.description, expected: why, source: stunSection.source)
            }
            guard Self.isLiteralIP(stun.listen.host), Self.isLiteralIP(alternate.host) else {
                throw refuse("RFC 5780 needs two literal IP addresses of this host: stun.listen (\(stun.listen.host)) and stun.alternate must both be IPs, not names or wildcards")
            }
            guard alternate.host != stun.listen.host, stun.listen.port != 0, alternate.port != 0, alternate.port != stun.listen.port else {
                throw refuse("a second IP and a second port, both different from stun.listen (\(stun.listen)) and not 0")
            }
            guard alternate.host.contains(":") == stun.listen.host.contains(":") else {
                throw refuse("an address of the same family as stun.listen (\(stun.listen.host))")
            }
        }
        try stunSection.finish()

        let reachSection = try root.section("reach")
        let reach = ReachSettings(
            enabled: try reachSection.value("enabled", default: true),
            minInterval: try reachSection.value("min_interval", default: .seconds(10), in: .seconds(1) ... .seconds(86_400)),
            timeout: try reachSection.value("timeout", default: .seconds(3), in: .milliseconds(100) ... .seconds(30)),
            maxConcurrent: try reachSection.value("max_concurrent", default: 16, in: 1...1_024)
        )
        try reachSection.finish()

        return SignalConfig(log: log, http: http, auth: auth, store: store, registry: registry, stun: stun, reach: reach)
    }
}
