import AgentFlowCore
import Synchronization

/// The transports, certificates and listeners of one conformance check.
public struct TransportFixture: Sendable {
    let subject: any TransportTestSubject
    let certificates: TestCertificates
    let scope: CheckScope

    init(subject: any TransportTestSubject, scope: CheckScope) throws {
        self.subject = subject
        self.scope = scope
        certificates = try TestCertificates()
    }

    /// A transport for `node` (mutual TLS unless `plaintext`).
    func transport(_ node: String, plaintext: Bool = false, limits: TransportTestLimits = .defaults) throws -> any Transport {
        let id = NodeID(node)!
        return try subject.makeTransport(node: id, security: plaintext ? .plaintext : certificates.security(for: id), limits: limits)
    }

    /// A listening transport for `node`, collecting the links it accepts.
    func listener(_ node: String, plaintext: Bool = false, limits: TransportTestLimits = .defaults) async throws -> TestListener {
        try await TestListener.start(transport(node, plaintext: plaintext, limits: limits), scope: scope)
    }

    /// A listening "server", a "client" transport, the client's link to the server and the server's side of it.
    func linkPair(plaintext: Bool = false, limits: TransportTestLimits = .defaults) async throws -> (TestListener, any Transport, MeshStream, MeshStream) {
        let server = try await listener("server", plaintext: plaintext, limits: limits)
        let client = try transport("client", plaintext: plaintext, limits: limits)
        let link = try await scope.within(.seconds(10), "a dial to the server") {
            try await client.connect(to: server.address, expectedPeer: plaintext ? nil : NodeID("server"))
        }
        let accepted = try await server.next(scope)
        return (server, client, link, accepted)
    }
}

/// A listening transport whose accepted links the check takes one by one.
struct TestListener: Sendable {
    let transport: any Transport
    let address: HostPort
    let task: Task<Void, any Error>
    private let accepted: AcceptedLinks

    static func start(_ transport: any Transport, scope: CheckScope) async throws -> TestListener {
        let accepted = AcceptedLinks()
        let task = Task { try await transport.listen { link in accepted.add(link) } }
        let address = try await scope.within(.seconds(10), "the transport binding its listener") { try await transport.listeningAddress() }
        return TestListener(transport: transport, address: address, task: task, accepted: accepted)
    }

    /// The next accepted link, waiting up to 5 s.
    func next(_ scope: CheckScope) async throws -> MeshStream {
        guard let link = await accepted.next(timeout: .seconds(5)) else {
            throw scope.fail("the listener did not hand out the link within 5 s")
        }
        return link
    }

    /// Shuts the transport down (the check does not wait for it).
    func stop() {
        transport.beginGracefulShutdown()
    }
}

/// The links a listener accepted. Polled rather than awaited through an
/// AsyncStream, whose cancellation (a timed-out wait) would end it for good.
final class AcceptedLinks: Sendable {
    private let links = Mutex<[MeshStream]>([])

    func add(_ link: MeshStream) { links.withLock { $0.append(link) } }

    func next(timeout: Duration) async -> MeshStream? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let link = links.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return link }
            if ContinuousClock.now >= deadline || Task.isCancelled { return nil }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
