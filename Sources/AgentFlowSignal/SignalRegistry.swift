public import AgentFlowCore
import AgentFlowTLS
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
import Synchronization
import HTTPTypes

/// The signal server's business rules, independent of HTTP: validating
/// requests, issuing and checking node secrets, enforcing limits, and
/// shaping answers. The REST routes and the STUN heartbeat path both call it.
public struct SignalRegistry: Sendable {
    public let store: any NodeRegistryStore
    public let settings: SignalConfig.RegistrySettings
    /// UDP port of the STUN responder, advertised to nodes; nil when disabled.
    /// Set once the responder has bound (the configured port may be 0).
    public var stunPort: Int? { boundSTUNPort.withLock { $0 } }
    let boundSTUNPort: SharedValue<Int?>
    let metrics: SignalMetrics
    /// Registered nodes as of the last sweep (or registration): what `minPollIntervalSeconds` divides.
    let fleetSize = SharedValue(0)

    public init(store: any NodeRegistryStore, settings: SignalConfig.RegistrySettings, stunPort: Int?, metrics: SignalMetrics = SignalMetrics()) {
        self.store = store
        self.settings = settings
        self.boundSTUNPort = SharedValue(stunPort)
        self.metrics = metrics
    }

    var ttlSeconds: Double { settings.ttl.duration.inSeconds }

    /// Nodes should heartbeat at a third of the TTL, so two lost heartbeats do not evict them.
    var heartbeatIntervalSeconds: Double { ttlSeconds / 3 }

    /// The least time between one node's `/list` fetches: the fleet shares
    /// `registry.list_polls_per_second`. 0 (no floor of the server's) for small fleets.
    public var minPollIntervalSeconds: Int { fleetSize.withLock { $0 } / settings.listPollsPerSecond }

    // MARK: Register

    struct Registration {
        var nodeID: String
        var name: String
        var endpoints: [EndpointView]
        var labels: [String: String]
        var version: String
        var secret: String?
    }

    func parseRegistration(_ body: some Collection<UInt8>) throws(JSONBodyError) -> Registration {
        var json = try StrictJSONObject.parse(body)
        let nodeID = try json.string("node_id", maxLength: 63)!
        guard NodeID.isValid(nodeID) else { throw .field("node_id", "\"\(nodeID)\" is not a node id: \(NodeID.rules)") }
        let name = try json.string("name", maxLength: 128, required: false) ?? nodeID
        var endpoints: [EndpointView] = []
        for var endpoint in try json.objects("endpoints", maxCount: settings.maxEndpoints) {
            let transport = try endpoint.string("transport", maxLength: 32)!
            guard NodeID.isValid(transport) else { throw .field("\(endpoint.path).transport", "expected a transport name like grpc or tcp") }
            let host = try endpoint.string("host", maxLength: 253)!
            guard Self.isValidHost(host) else {
                throw .field("\(endpoint.path).host", "expected a host name (letters, digits, . _ -) or an IP address")
            }
            let port = try endpoint.integer("port", in: 1...65_535)
            try endpoint.finish()
            endpoints.append(EndpointView(transport: transport, host: host, port: port))
        }
        guard !endpoints.isEmpty else { throw .field("endpoints", "at least one endpoint is required (transport, host, port)") }
        let labels = try json.stringMap("labels", maxCount: settings.maxLabels, maxEntryBytes: settings.maxLabelBytes)
        let version = try json.string("version", maxLength: 64, required: false) ?? "unknown"
        let secret = try json.string("secret", maxLength: 128, required: false)
        // A node may choose its own secret (the discovery backend keeps one on disk), but not a guessable one.
        if let secret, secret.unicodeScalars.count < 16 { throw .field("secret", "a chosen secret needs at least 16 characters (or omit it and use the one issued)") }
        try json.finish()
        return Registration(nodeID: nodeID, name: name, endpoints: endpoints, labels: labels, version: version, secret: secret)
    }

    /// Registers (or re-registers) a node from a request body.
    public func register(body: some Collection<UInt8>, observedAddress: String?, now: Date = Date()) async throws -> (created: Bool, response: RegisterResponse) {
        let registration = try parseRegistration(body)
        let issuedSecret: String? = registration.secret == nil ? try Self.newSecret() : nil
        let secret = registration.secret ?? issuedSecret!
        let timestamp = Timestamp.string(now)
        let node = StoredNode(
            view: NodeView(
                nodeID: registration.nodeID, name: registration.name, endpoints: registration.endpoints,
                observedAddress: observedAddress, labels: registration.labels, version: registration.version,
                registeredAt: timestamp, lastSeen: timestamp),
            secretDigest: try Self.digest(secret),
            lastSeenMillis: now.unixMillis)
        let outcome = try await store.register(node, presentedSecretDigest: registration.secret.map(Self.digest), maxNodes: settings.maxNodes)
        let revision: UInt64
        let created: Bool
        switch outcome {
        case .created(let value):
            // A re-registration after eviction presents its old secret; the record is new, and keeps that secret.
            revision = value
            created = true
            fleetSize.withLock { $0 += 1 }  // until the next sweep counts exactly
        case .replaced(let value):
            revision = value
            created = false
        case .wrongSecret:
            throw SignalAPIError.forbiddenSecret(registration.nodeID)
        case .full:
            throw SignalAPIError(.tooManyRequests, "registry_full", "the registry holds registry.max_nodes = \(settings.maxNodes) nodes; try again later")
        }
        return (created, RegisterResponse(
            nodeID: registration.nodeID, secret: issuedSecret, created: created, ttlSeconds: ttlSeconds,
            heartbeatIntervalSeconds: heartbeatIntervalSeconds, observedAddress: observedAddress, revision: revision, stunPort: stunPort,
            minPollIntervalSeconds: minPollIntervalSeconds))
    }

    // MARK: Heartbeat and deregister

    func parseCredentials(_ body: some Collection<UInt8>) throws(JSONBodyError) -> (nodeID: String, secret: String) {
        var json = try StrictJSONObject.parse(body)
        let nodeID = try json.string("node_id", maxLength: 63)!
        guard NodeID.isValid(nodeID) else { throw .field("node_id", "\"\(nodeID)\" is not a node id: \(NodeID.rules)") }
        let secret = try json.string("secret", maxLength: 128)!
        try json.finish()
        return (nodeID, secret)
    }

    public func heartbeat(body: some Collection<UInt8>, observedAddress: String?, now: Date = Date()) async throws -> HeartbeatResponse {
        let (nodeID, secret) = try parseCredentials(body)
        switch try await store.heartbeat(nodeID: nodeID, secretDigest: try Self.digest(secret), observedAddress: observedAddress, now: now) {
        case .refreshed(let revision):
            return HeartbeatResponse(nodeID: nodeID, ttlSeconds: ttlSeconds, revision: revision, minPollIntervalSeconds: minPollIntervalSeconds)
        case .unknownNode:
            throw SignalAPIError.unknownNode(nodeID)
        case .wrongSecret:
            throw SignalAPIError.forbiddenSecret(nodeID)
        }
    }

    public func deregister(body: some Collection<UInt8>) async throws -> UInt64 {
        let (nodeID, secret) = try parseCredentials(body)
        switch try await store.deregister(nodeID: nodeID, secretDigest: try Self.digest(secret)) {
        case .removed(let revision): return revision
        case .unknownNode: throw SignalAPIError.unknownNode(nodeID)
        case .wrongSecret: throw SignalAPIError.forbiddenSecret(nodeID)
        }
    }

    // MARK: List

    /// Filters of `GET /list`.
    public struct ListFilter: Sendable {
        public var transport: String?
        /// `key` or `key=value`, all of which must match.
        public var labels: [(key: String, value: String?)]

        public init(transport: String? = nil, labels: [(key: String, value: String?)] = []) {
            self.transport = transport
            self.labels = labels
        }

        func matches(_ node: NodeView) -> Bool {
            if let transport, !node.endpoints.contains(where: { $0.transport == transport }) { return false }
            for label in labels {
                guard let actual = node.labels[label.key] else { return false }
                if let expected = label.value, expected != actual { return false }
            }
            return true
        }
    }

    public func list(since: UInt64?, filter: ListFilter) async throws -> ListResponse {
        let changes = try await store.changes(since: since)
        var nodes: [NodeView] = []
        var removed = changes.removed
        for stored in changes.nodes {
            if filter.matches(stored.view) {
                nodes.append(stored.view)
            } else if !changes.full {
                // A node that changed so it no longer matches has left the filtered view.
                removed.append(stored.view.nodeID)
            }
        }
        return ListResponse(revision: changes.revision, full: changes.full, nodes: nodes, removed: removed.sorted())
    }

    /// A host name or IPv4 address (ASCII letters, digits, `.`, `_`, `-`) or an IPv6
    /// literal (hex digits, `:` and `.`, with at least one `:`), 1–253 bytes: the
    /// OpenAPI document's `Host` pattern, exactly. Peers dial what is listed, so
    /// control characters and other text are refused at the door.
    static func isValidHost(_ host: String) -> Bool {
        let bytes = host.utf8
        guard (1...253).contains(bytes.count) else { return false }
        func isHostName(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        func isIPv6(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte) || byte == 0x3A || byte == 0x2E
        }
        return bytes.allSatisfy(isHostName) || (bytes.contains(0x3A) && bytes.allSatisfy(isIPv6))
    }

    // MARK: Secrets

    /// 32 random bytes from OpenSSL, hex: the per-node secret.
    static func newSecret() throws -> String {
        try OpenSSLLibrary.randomBytes(32).hexString
    }

    /// Hex SHA-256 of a secret: what the store keeps, and the node's STUN password.
    public static func digest(_ secret: String) throws -> String {
        try OpenSSLLibrary.sha256(Array(secret.utf8)).hexString
    }
}

extension Array where Element == UInt8 {
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A value shared between copies of a struct (set after start-up, read on requests).
final class SharedValue<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { storage.withLock { body(&$0) } }
}
