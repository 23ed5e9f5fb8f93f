import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowGRPC
import AgentFlowProbes
import AgentFlowTCP
import Foundation
import Logging
import SwiftProtobuf
import Testing

@Suite("Config: defaults, examples, environment")
struct ConfigDefaultsTests {
    @Test("no file runs a local master on defaults")
    func masterDefaults() throws {
        let config = try ConfigLoader.loadMaster(file: nil, environment: [:], registry: inMemoryRegistry())
        #expect(config.transport.listen == HostPort(host: "0.0.0.0", port: 50051))
        #expect(config.transport.module.name == "memory")
        #expect(config.discovery.module.name == "memory")
        #expect(config.mesh.maxPeers == 0)
        #expect(config.api.listen == HostPort(host: "127.0.0.1", port: 8080))
        #expect(config.api.token == nil)
        #expect(config.log.level == .info)
        guard case .mutualTLS(let files) = config.security else {
            Issue.record("TLS must default to mutual TLS")
            return
        }
        #expect(files.caCertificateFile == "./agentflow-data/certs/ca.pem")
    }

    @Test("no file runs a signal server on loopback defaults")
    func signalDefaults() throws {
        let config = try ConfigLoader.loadSignal(file: nil, environment: [:])
        #expect(config.http.listen == HostPort(host: "127.0.0.1", port: 7070))
        #expect(config.registry.ttl == .seconds(30))
        #expect(config.store.kind == .memory)
        #expect(config.stun.listen.port == 3478)
    }

    static let exampleFiles: [String] = {
        let folder = packageRoot.appending(path: "examples")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path())) ?? []
        return names.filter { $0.hasSuffix(".yml") || $0.hasSuffix(".yaml") }.sorted().map { folder.appending(path: $0).path() }
    }()

    @Test("there are example configs for both roles")
    func examplesExist() {
        #expect(Self.exampleFiles.contains { $0.hasSuffix("master.yml") })
        #expect(Self.exampleFiles.contains { $0.hasSuffix("signal.yml") })
    }

    @Test("every example config is accepted", arguments: exampleFiles)
    func exampleAccepted(file: String) throws {
        // The examples name the modules `agentflow` ships, so register those too.
        var registry = inMemoryRegistry()
        registry.register(transport: GRPCTransportModule.self)
        registry.register(transport: TCPTransportModule.self)
        registry.register(discovery: SignalDiscoveryModule.self)
        registry.register(discovery: StaticPeersDiscoveryModule.self)
        registry.register(probe: STUNProbeModule.self)
        registry.register(probe: ReachProbeModule.self)
        registry.register(probe: SignalProbeModule.self)
        let (config, yaml) = try ConfigLoader.load(file: file, role: nil, environment: [:], registry: registry)
        #expect(yaml.contains("role: \(config.role.rawValue)"))
    }

    @Test("environment overrides set nested keys, lists and maps")
    func environmentOverrides() throws {
        let environment = [
            "AGENTFLOW_MASTER__MESH__MAX_PEERS": "3",
            "AGENTFLOW_MASTER__NODE__ID": "env-node",
            "AGENTFLOW_MASTER__TRANSPORT__ADVERTISE": "[203.0.113.7:50051, \"[2001:db8::1]:50051\"]",
            "AGENTFLOW_MASTER__NODE__LABELS": "{zone: eu-1}",
            "AGENTFLOW_SIGNAL__HTTP__LISTEN": "0.0.0.0:1",  // other role: ignored
            "PATH": "/usr/bin",
        ]
        let file = try temporaryFile("role: master\nmesh:\n  max_peers: 1\n")
        let (loaded, yaml) = try ConfigLoader.load(file: file, role: .master, environment: environment, registry: inMemoryRegistry())
        guard case .master(let config) = loaded else { throw CancellationError() }
        #expect(config.mesh.maxPeers == 3)
        #expect(config.node.id.rawValue == "env-node")
        #expect(config.transport.advertise == [HostPort(host: "203.0.113.7", port: 50051), HostPort(host: "2001:db8::1", port: 50051)])
        #expect(config.node.labels == ["zone": "eu-1"])
        #expect(yaml.contains("max_peers: 3  # env AGENTFLOW_MASTER__MESH__MAX_PEERS"))
    }

    @Test("secrets are never printed in the effective config")
    func secretsRedacted() throws {
        let file = try temporaryFile("role: signal\nauth:\n  token: super-secret-token-123456\napi: {}\n".replacingOccurrences(of: "api: {}\n", with: ""))
        let (_, yaml) = try ConfigLoader.load(file: file, role: nil, environment: [:], registry: inMemoryRegistry())
        #expect(!yaml.contains("super-secret"))
        #expect(yaml.contains("token: <redacted>"))
    }

    @Test("relative paths resolve against the config file's folder")
    func relativePaths() throws {
        let file = try temporaryFile("role: master\nnode:\n  data_dir: data\n")
        let config = try ConfigLoader.loadMaster(file: file, environment: [:], registry: inMemoryRegistry())
        let folder = URL(filePath: file).deletingLastPathComponent().path()
        #expect(config.node.dataDirectory == URL(filePath: folder).appending(path: "data").path())
    }

    @Test("durations read with units", arguments: [("250ms", 250), ("5s", 5_000), ("2m", 120_000), ("1h", 3_600_000), ("1.5s", 1_500)])
    func durations(text: String, milliseconds: Int64) {
        #expect(ConfigDuration(configText: text)?.duration == .milliseconds(milliseconds))
    }

    @Test("durations without a unit are refused", arguments: ["5", "s", "-1s", "fast", ""])
    func badDurations(text: String) {
        #expect(ConfigDuration(configText: text) == nil)
    }

    @Test("host:port parsing", arguments: [
        ("127.0.0.1:80", true), ("[::1]:50051", true), ("localhost:0", true), ("example.org:65535", true),
        ("127.0.0.1:65536", false), ("127.0.0.1", false), ("::1:80", false), (":80", false), ("a b:1", false), ("h:-1", false),
    ])
    func hostPort(text: String, valid: Bool) {
        #expect((HostPort(parsing: text) != nil) == valid)
    }
}
