import AgentFlowCore
import AgentFlowInMemory
import Testing

/// A transport that exists only in this test target: proof that a package
/// outside the core adds a transport by registering it, without touching the core.
/// It wraps the in-memory transport and counts the links it makes.
enum CountingTransportModule: TransportModule {
    struct Options: Sendable {
        var label: String
        var capacity: Int
    }

    static let name = "counting"
    static let summary = "test-only transport"

    static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(label: try section.value("label", default: "none"), capacity: try section.value("capacity", default: 4, in: 1...100))
    }

    static func makeTransport(options: Options, context: TransportContext) throws -> any Transport {
        InMemoryTransport(localNodeID: context.localNodeID, listenAddress: context.listenAddress, queueCapacity: options.capacity)
    }
}

/// A discovery backend defined only here: a fixed list of peers from config.
enum FixedDiscoveryModule: DiscoveryModule {
    struct Options: Sendable { var peers: [NodeID] }
    static let name = "fixed"
    static let summary = "test-only discovery"

    static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(peers: try section.list("peers", default: []))
    }

    static func makeDiscovery(options: Options, context: DiscoveryContext) throws -> any Discovery {
        FixedDiscovery(peers: options.peers.map { DiscoveredPeer(nodeID: $0, endpoints: []) })
    }

    struct FixedDiscovery: Discovery {
        let name = "fixed"
        let peers: [DiscoveredPeer]
        func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
            AsyncThrowingStream { continuation in
                continuation.yield(PeerSetUpdate(peers: peers.filter { $0.nodeID != local.nodeID }))
                continuation.finish()
            }
        }
    }
}

/// A probe defined only here.
enum EchoProbeModule: ProbeModule {
    struct Options: Sendable { var text: String }
    static let name = "echo"
    static let summary = "test-only probe"
    static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(text: try section.requiredValue("text"))
    }
    static func makeProbe(options: Options, context: ProbeContext) throws -> any Probe {
        EchoProbe(text: options.text)
    }
    struct EchoProbe: Probe {
        let name = "echo"
        let text: String
        func run() async throws -> ProbeReport {
            ProbeReport(probe: name, outcome: .passed, summary: text, facts: [.init("length", "\(text.count)")])
        }
    }
}

@Suite("Module registry")
struct ModuleRegistryTests {
    func registry() -> ModuleRegistry {
        var registry = inMemoryRegistry()
        registry.register(transport: CountingTransportModule.self)
        registry.register(discovery: FixedDiscoveryModule.self)
        registry.register(probe: EchoProbeModule.self)
        return registry
    }

    @Test("config selects a transport defined outside the core, with its own options")
    func externalTransportSelected() async throws {
        let file = try temporaryFile("""
            role: master
            node: {id: node-a}
            transport:
              kind: counting
              listen: 127.0.0.1:0
              label: blue
              capacity: 2
            discovery:
              kind: fixed
              peers: [node-b, node-a]
            """)
        let config = try ConfigLoader.loadMaster(file: file, environment: [:], registry: registry())
        #expect(config.transport.module.name == "counting")
        let transport = try config.transport.module.make(context: TransportContext(
            localNodeID: config.node.id, listenAddress: config.transport.listen, security: .plaintext))
        let memory = try #require(transport as? InMemoryTransport)
        #expect(memory.localNodeID.rawValue == "node-a")

        let discovery = try config.discovery.module.make(context: DiscoveryContext(localNodeID: config.node.id, dataDirectory: "/tmp"))
        var updates: [PeerSetUpdate] = []
        for try await update in discovery.peerSets(announcing: LocalAnnouncement(nodeID: config.node.id, displayName: "a", endpoints: [], labels: [:])) {
            updates.append(update)
        }
        #expect(updates.map { $0.peers.map(\.nodeID.rawValue) } == [["node-b"]])
    }

    @Test("the external module's own option errors name its keys")
    func externalOptionErrors() throws {
        let error = try configError("role: master\ntransport:\n  kind: counting\n  capacity: 500\n", registry: registry())
        #expect(error.path.description == "transport.capacity")
        let unknown = try configError("role: master\ntransport:\n  kind: counting\n  colour: red\n", registry: registry())
        #expect(unknown.kind == .unknownKey)
        #expect(unknown.message.contains("capacity, kind, label"))
    }

    @Test("an unknown name lists every registered one")
    func unknownLists() throws {
        let error = try configError("role: master\ntransport:\n  kind: carrier-pigeon\n", registry: registry())
        #expect(error.message.contains("registered transports: counting, memory"))
    }

    @Test("probes register and run by name")
    func probes() async throws {
        let registry = registry()
        let registration = try #require(registry.probes["echo"])
        let section = try ConfigSection.root(ConfigNode.parse(yaml: "text: hello", file: "inline"))
        let probe = try registration.configure(from: section).make(context: ProbeContext(localNodeID: NodeID("a")!))
        let report = try await probe.run()
        #expect(report.outcome == .passed)
        #expect(report.facts == [.init("length", "5")])

        let missing = try ConfigSection.root(ConfigNode.parse(yaml: "{}", file: "inline"))
        #expect(throws: ConfigError.self) { _ = try registration.configure(from: missing) }
    }

    @Test("an empty registry says nothing is registered")
    func emptyRegistry() throws {
        let error = try configError("role: master\n", registry: ModuleRegistry())
        #expect(error.message.contains("no transport is registered"))
    }
}
