public import AgentFlowCore

/// A peers file, decoded: the `static` discovery backend's input. YAML (or
/// JSON, which YAML reads too):
///
/// ```yaml
/// peers:
///   - id: master-b
///     name: Master B                 # optional
///     endpoints: [grpc://10.0.0.2:50051, tcp://10.0.0.2:50052]
///     labels: {site: cloud}          # optional
/// ```
/// Errors name the file, line, key path and bad value, as config errors do.
public enum StaticPeersFile {
    public static func parse(_ text: String, file: String) throws(ConfigError) -> [DiscoveredPeer] {
        let root = try ConfigSection.root(try ConfigNode.parse(yaml: text, file: file))
        var peers: [DiscoveredPeer] = []
        var seen: Set<NodeID> = []
        for entry in try root.sections("peers") {
            let id: NodeID = try entry.requiredValue("id", hint: "every peer needs its node id: \(NodeID.rules)")
            let name: String? = try entry.optionalValue("name")
            let endpoints: [EndpointText] = try entry.list("endpoints", default: [])
            if endpoints.isEmpty {
                throw ConfigError(.missingKey, path: entry.path.appending(key: "endpoints"), value: nil,
                                  expected: "at least one endpoint, written transport://host:port (e.g. grpc://10.0.0.2:50051)", source: entry.source)
            }
            let labels = try entry.stringMap("labels")
            try entry.finish()
            guard seen.insert(id).inserted else {
                throw ConfigError(.invalidValue, path: entry.path.appending(key: "id"), value: id.rawValue,
                                  expected: "each peer once; '\(id)' is listed twice", source: entry.source)
            }
            peers.append(DiscoveredPeer(nodeID: id, displayName: name, endpoints: endpoints.map(\.endpoint),
                                        labels: Dictionary(labels.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })))
        }
        try root.finish()
        return peers
    }
}

/// `transport://host:port` as one config scalar.
struct EndpointText: ConfigScalar {
    let endpoint: DiscoveredEndpoint

    static var expectation: String { "transport://host:port, e.g. grpc://10.0.0.2:50051 or tcp://[2001:db8::1]:50052" }

    init?(configText: String) {
        guard let endpoint = DiscoveredEndpoint(parsing: configText) else { return nil }
        self.endpoint = endpoint
    }

    var configText: String { endpoint.description }
}
