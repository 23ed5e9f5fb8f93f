import AgentFlowCore

/// Registers DNS discovery as `dns`:
///
/// ```yaml
/// discovery:
///   kind: dns
///   name: masters.agentflow.internal   # resolves to every master's address
///   port: 50051                        # where each of them listens
///   interval: 10s                      # re-resolve this often
///   transport: grpc                    # default: the node's preferred transport
///   hosts_file: /etc/agentflow/hosts   # optional: resolve from this file, not the system resolver
/// ```
public enum DNSDiscoveryModule: DiscoveryModule {
    public struct Options: Sendable, Hashable {
        /// The name to resolve. Required.
        public var name: String
        /// The port every master listens on. Required.
        public var port: Int
        /// How often to resolve. Default 10s.
        public var interval: ConfigDuration
        /// The transport of the addresses found. Default: the node's preferred transport.
        public var transport: String?
        /// A hosts-format file to resolve from instead of the system resolver. Default unset.
        public var hostsFile: String?
    }

    public static let name = "dns"
    public static let summary = "addresses a DNS name resolves to (a compose or Kubernetes service), re-resolved every interval"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        let port: Int = try section.requiredValue("port", hint: "the port every master listens on, e.g. 50051")
        guard (1...65_535).contains(port) else {
            throw ConfigError(.invalidValue, path: section.path.appending(key: "port"), value: String(port), expected: "a port from 1 to 65535", source: section.source)
        }
        let transport: String? = try section.optionalValue("transport")
        if let transport, !NodeID.isValid(transport) {
            throw ConfigError(.invalidValue, path: section.path.appending(key: "transport"), value: transport,
                              expected: "a transport name (\(NodeID.rules))", source: section.source)
        }
        return Options(
            name: try section.requiredValue("name", hint: "the DNS name that resolves to the masters, e.g. masters.agentflow.internal"),
            port: port,
            interval: try section.value("interval", default: .seconds(10), in: .milliseconds(50) ... .seconds(3_600)),
            transport: transport,
            hostsFile: try section.filePath("hosts_file", default: nil, mustExist: false))
    }

    public static func makeDiscovery(options: Options, context: DiscoveryContext) throws -> any Discovery {
        let resolver: any NameResolver = options.hostsFile.map { HostsFileResolver(file: $0) } ?? SystemResolver()
        return DNSDiscovery(
            name: options.name, port: options.port, transport: options.transport ?? context.transports.first ?? "grpc",
            interval: options.interval.duration, resolver: resolver, logger: context.logger)
    }
}
