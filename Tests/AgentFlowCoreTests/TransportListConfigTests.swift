import AgentFlowCore
import AgentFlowInMemory
import Testing

/// `transport.kind` as a list: several transports, one listen address each,
/// advertised addresses that say which transport they belong to.
@Suite("Config: several transports per node")
struct TransportListConfigTests {
    /// `memory` and `counting` (the in-memory transport under a second name).
    func registry() -> ModuleRegistry {
        var registry = inMemoryRegistry()
        registry.register(transport: CountingTransportModule.self)
        return registry
    }

    @Test("a list of kinds with one listen address each, and kind:// advertised addresses")
    func accepted() throws {
        let file = try temporaryFile("""
            role: master
            transport:
              kind: [counting, memory]
              listen: [127.0.0.1:7001, 127.0.0.1:7002]
              advertise: [counting://203.0.113.7:7001]
              label: red
            """)
        let config = try ConfigLoader.loadMaster(file: file, environment: [:], registry: registry())
        #expect(config.transport.modules.map(\.name) == ["counting", "memory"])
        #expect(config.transport.module.name == "counting")
        #expect(config.transport.listeners == [HostPort(host: "127.0.0.1", port: 7001), HostPort(host: "127.0.0.1", port: 7002)])
        #expect(config.transport.listen == HostPort(host: "127.0.0.1", port: 7001))
        #expect(config.transport.advertisedEndpoints.map(\.description) == ["counting://203.0.113.7:7001"])
        #expect(config.transport.advertise.isEmpty)
    }

    @Test("one name stays one transport, and a plain advertised address is that transport's")
    func single() throws {
        let file = try temporaryFile("role: master\ntransport:\n  kind: memory\n  advertise: [203.0.113.7:50051]\n")
        let config = try ConfigLoader.loadMaster(file: file, environment: [:], registry: registry())
        #expect(config.transport.modules.map(\.name) == ["memory"])
        #expect(config.transport.advertise == [HostPort(host: "203.0.113.7", port: 50051)])
        #expect(config.transport.advertisedEndpoints.map(\.description) == ["memory://203.0.113.7:50051"])
    }

    @Test("one ephemeral listen address serves every transport")
    func ephemeral() throws {
        let file = try temporaryFile("role: master\ntransport:\n  kind: [memory, counting]\n  listen: 127.0.0.1:0\n")
        let config = try ConfigLoader.loadMaster(file: file, environment: [:], registry: registry())
        #expect(config.transport.listeners == [HostPort(host: "127.0.0.1", port: 0), HostPort(host: "127.0.0.1", port: 0)])
    }

    @Test("refused, each with its key and what is allowed", arguments: [
        ("transport:\n  kind: [memory, memory]\n  listen: 127.0.0.1:0\n", "transport.kind", "each transport once"),
        ("transport:\n  kind: [memory, quic]\n  listen: 127.0.0.1:0\n", "transport.kind[1]", "registered transports"),
        ("transport:\n  kind: [memory, counting]\n  listen: 127.0.0.1:7001\n", "transport.listen", "one listen address each"),
        ("transport:\n  kind: [memory, counting]\n  listen: [127.0.0.1:7001]\n", "transport.listen", "one listen address each"),
        ("transport:\n  kind: [memory, counting]\n  listen: 127.0.0.1:0\n  advertise: [203.0.113.7:1]\n", "transport.advertise[0]", "memory://203.0.113.7:1 or counting://"),
        ("transport:\n  kind: memory\n  advertise: [grpc://203.0.113.7:1]\n", "transport.advertise[0]", "a transport this node listens on: memory"),
        ("transport:\n  kind: memory\n  advertise: [memory://0.0.0.0:1]\n", "transport.advertise[0]", "must be dialable"),
        ("transport:\n  kind: [memory, counting]\n  listen: 127.0.0.1:0\n  colour: red\n", "transport.colour", "allowed keys here"),
    ])
    func refused(yaml: String, path: String, expected: String) throws {
        let error = try configError("role: master\n" + yaml, registry: registry())
        #expect(error.path.description == path, "\(error.message)")
        #expect(error.message.contains(expected), "\(error.message)")
    }
}
