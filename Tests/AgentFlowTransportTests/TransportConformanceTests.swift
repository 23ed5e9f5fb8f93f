import AgentFlowCore
import AgentFlowInMemory
import AgentFlowTesting
import AgentFlowTransportKit
import Testing

/// The contract every transport keeps: the `AgentFlowTesting` suite, the one
/// an outside transport runs too, over each transport AgentFlow ships.
@Suite("Transport conformance", .serialized)
struct TransportConformanceTests {
    @Test("every check, over every transport", arguments: TransportKind.allCases, TransportConformance.checks)
    func conformance(kind: TransportKind, check: TransportConformance.Check) async throws {
        try await check.run(kind.subject)
    }
}

extension TransportKind {
    var subject: any TransportTestSubject { BuiltInTransportSubject(kind: self, network: InMemoryNetwork()) }
}

/// Builds AgentFlow's transports for the conformance suite.
struct BuiltInTransportSubject: TransportTestSubject {
    let kind: TransportKind
    let network: InMemoryNetwork

    var name: String { kind.rawValue }
    // The memory transport never encrypts: "plaintext" is the same path there.
    var supportsPlaintext: Bool { kind != .memory }

    func makeTransport(node: NodeID, security: TransportSecurity, limits: TransportTestLimits) throws -> any Transport {
        var options = TransportKind.testOptions
        options.maxMessageBytes = limits.maxMessageBytes
        options.keepaliveInterval = ConfigDuration(limits.keepaliveInterval)
        options.deadPeerTimeout = ConfigDuration(limits.deadPeerTimeout)
        return try kind.make(node: node.rawValue, pki: Self.unusedPKI, network: network, security: security, options: options)
    }

    func unreachableAddress() -> HostPort {
        kind.usesSockets ? HostPort(host: "127.0.0.1", port: 1) : HostPort(host: "mem-nobody", port: 9)
    }

    func crash(_ transport: any Transport) { AgentFlowTransportTests.crash(transport) }

    /// `make` takes a PKI for tests that let it issue certificates; the suite brings its own security.
    static let unusedPKI = try! TestPKI()
}
