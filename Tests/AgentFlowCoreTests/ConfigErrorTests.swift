import AgentFlowCore
import Foundation
import Testing

@Suite("Config: a bad config is refused with the key, the value and what is allowed")
struct ConfigErrorTests {
    @Test("wrong type")
    func wrongType() throws {
        let error = try configError("role: master\nmesh:\n  max_peers: lots\n")
        #expect(error.kind == .invalidValue)
        #expect(error.path.description == "mesh.max_peers")
        #expect(error.message.contains("\"lots\""))
        #expect(error.message.contains("an integer"))
        #expect(error.message.contains(":3:"))  // line of the value
    }

    @Test("a mapping where a scalar belongs")
    func mappingForScalar() throws {
        let error = try configError("role: master\ntransport:\n  listen:\n    host: a\n")
        #expect(error.kind == .wrongType)
        #expect(error.path.description == "transport.listen")
    }

    @Test("unknown module name lists the registered ones")
    func unknownModule() throws {
        let error = try configError("role: master\ntransport:\n  kind: quic\n")
        #expect(error.kind == .unknownModule)
        #expect(error.path.description == "transport.kind")
        #expect(error.message.contains("\"quic\""))
        #expect(error.message.contains("registered transports: memory"))
    }

    @Test("unknown discovery backend")
    func unknownDiscovery() throws {
        let error = try configError("role: master\ndiscovery:\n  kind: dns\n")
        #expect(error.kind == .unknownModule)
        #expect(error.message.contains("registered discovery backends: memory"))
    }

    @Test("port out of range", arguments: ["0.0.0.0:99999", "0.0.0.0:-1", "nohost"])
    func portOutOfRange(value: String) throws {
        let error = try configError("role: master\ntransport:\n  listen: \"\(value)\"\n")
        #expect(error.path.description == "transport.listen")
        #expect(error.message.contains("0-65535"))
    }

    @Test("missing certificate file")
    func missingCertificate() throws {
        let error = try configError("role: master\ntls:\n  ca_file: /nonexistent/ca.pem\n")
        #expect(error.kind == .missingFile)
        #expect(error.path.description == "tls.ca_file")
        #expect(error.message.contains("/nonexistent/ca.pem"))
    }

    @Test("unknown keys are errors, at every level", arguments: [
        ("role: master\nmesh:\n  max_peer: 3\n", "mesh.max_peer", "max_peers"),
        ("role: master\ntransprot:\n  kind: memory\n", "transprot", "transport"),
        ("role: master\ntransport:\n  kind: memory\n  queue_capacity_x: 1\n", "transport.queue_capacity_x", "queue_capacity"),
        ("role: signal\nregistry:\n  tll: 5s\n", "registry.tll", "ttl"),
    ])
    func unknownKey(yaml: String, path: String, suggestion: String) throws {
        let error = try configError(yaml)
        #expect(error.kind == .unknownKey)
        #expect(error.path.description == path)
        #expect(error.message.contains(suggestion))
    }

    @Test("values out of range")
    func outOfRange() throws {
        let error = try configError("role: master\nmesh:\n  max_peers: 5000\n")
        #expect(error.message.contains("from 0 to 1000"))
        let timeout = try configError("role: master\nmesh:\n  ping_interval: 10s\n  peer_timeout: 5s\n")
        #expect(timeout.path.description == "mesh.peer_timeout")
        // Suspicion starts at half of peer_timeout: a healthy link must be pinged before that.
        let tight = try configError("role: master\nmesh:\n  ping_interval: 3s\n  peer_timeout: 5s\n")
        #expect(tight.path.description == "mesh.peer_timeout")
        #expect(tight.message.contains("at least twice mesh.ping_interval"))
        let graft = try configError("role: master\nstate:\n  graft_timeout: 1ms\n")
        #expect(graft.path.description == "state.graft_timeout")
    }

    @Test("invalid node id")
    func invalidNodeID() throws {
        let error = try configError("role: master\nnode:\n  id: Bad Id!\n")
        #expect(error.path.description == "node.id")
        #expect(error.message.contains("a-z"))
    }

    @Test("duplicate keys")
    func duplicateKeys() throws {
        let error = try configError("role: master\nmesh:\n  max_peers: 1\n  max_peers: 2\n")
        #expect(error.kind == .malformedYAML)
        #expect(error.message.contains("duplicated key(s): 'max_peers'"))
        #expect(error.message.contains("line 3"))
    }

    @Test("malformed YAML")
    func malformedYAML() throws {
        let error = try configError("role: master\nmesh: [unclosed\n")
        #expect(error.kind == .malformedYAML)
    }

    @Test("role missing, wrong, or unknown")
    func roles() throws {
        #expect(try configError("mesh: {}\n").path.description == "role")
        #expect(try configError("role: lighthouse\n").message.contains("one of master, signal"))
        let file = try temporaryFile("role: signal\n")
        #expect(throws: ConfigError.self) {
            _ = try ConfigLoader.load(file: file, role: .master, environment: [:], registry: inMemoryRegistry())
        }
    }

    @Test("a non-loopback API or signal listener needs a token")
    func tokensRequired() throws {
        #expect(try configError("role: master\napi:\n  listen: 0.0.0.0:8080\n").path.description == "api.token")
        #expect(try configError("role: signal\nhttp:\n  listen: 0.0.0.0:7070\n").path.description == "auth.token")
        #expect(try configError("role: signal\nauth:\n  token: short\n").message.contains("at least 16"))
    }

    @Test("environment overrides are checked like the file, naming the variable")
    func environmentErrors() throws {
        let bad = try configError("role: master\n", environment: ["AGENTFLOW_MASTER__MESH__MAX_PEERS": "many"])
        #expect(bad.message.contains("AGENTFLOW_MASTER__MESH__MAX_PEERS"))
        #expect(bad.path.description == "mesh.max_peers")
        let unknown = try configError("role: master\n", environment: ["AGENTFLOW_MASTER__MESH__MAXPEERS": "1"])
        #expect(unknown.kind == .unknownKey)
        #expect(unknown.message.contains("AGENTFLOW_MASTER__MESH__MAXPEERS"))
    }

    @Test("an unreadable file")
    func unreadable() {
        #expect(throws: ConfigError.self) {
            _ = try ConfigLoader.load(file: "/nonexistent/agentflow.yml", role: .master, environment: [:], registry: inMemoryRegistry())
        }
    }

    @Test("every example, broken in each way, is refused naming the key", arguments: ConfigDefaultsTests.exampleFiles)
    func brokenExamples(file: String) throws {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        // An unknown key added to the first section of the file.
        let unknown = try configError(text.replacingOccurrences(of: "\nlog:\n", with: "\nlog:\n  colour: always\n"))
        #expect(unknown.path.description == "log.colour")
        // A bad value for the log level, present in every role.
        let level = try configError(text.replacingOccurrences(of: "  level: info", with: "  level: loud"))
        #expect(level.path.description == "log.level")
        #expect(level.message.contains("\"loud\""))
    }
}
