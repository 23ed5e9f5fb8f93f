import AgentFlowCore
import AgentFlowInMemory
import AgentFlowProto
import AgentFlowTesting
import Synchronization

/// A transport written here, outside every AgentFlow module, as a third
/// party would: it wraps another transport and counts what each link
/// carries (an instrumentation layer). A `fault` plants a bug, so the tests
/// can show that the conformance suite catches it.
final class CountingTransport: Transport {
    enum Fault: Sendable {
        case none
        /// Swaps every 100th message with the one after it.
        case reorder
        /// Never waits: writes go into an unbounded buffer.
        case unboundedWrites
    }

    let inner: any Transport
    let fault: Fault
    let sent = Atomic<Int>(0)
    var name: String { "counting" }

    init(wrapping inner: any Transport, fault: Fault = .none) {
        self.inner = inner
        self.fault = fault
    }

    func listen(_ handler: @escaping @Sendable (MeshStream) async -> Void) async throws {
        try await inner.listen { stream in await handler(self.wrap(stream)) }
    }

    func listeningAddress() async throws -> HostPort { try await inner.listeningAddress() }

    func connect(to address: HostPort, expectedPeer: NodeID?) async throws -> MeshStream {
        wrap(try await inner.connect(to: address, expectedPeer: expectedPeer))
    }

    func beginGracefulShutdown() { inner.beginGracefulShutdown() }

    private func wrap(_ stream: MeshStream) -> MeshStream {
        var peer = stream.peer
        peer.transport = name
        return MeshStream(peer: peer, inbound: stream.inbound, outbound: CountingWriter(inner: stream.outbound, transport: self), executor: stream.executor)
    }
}

struct CountingWriter: EnvelopeWriter {
    let inner: any EnvelopeWriter
    let transport: CountingTransport
    private let held = Held()
    private let backlog = Backlog()

    init(inner: any EnvelopeWriter, transport: CountingTransport) {
        self.inner = inner
        self.transport = transport
    }

    func write(_ envelope: Envelope) async throws {
        let count = transport.sent.add(1, ordering: .relaxed).newValue
        switch transport.fault {
        case .none:
            try await inner.write(envelope)
        case .reorder:
            if count % 100 == 0 {
                held.value.withLock { $0 = envelope }
                return
            }
            try await inner.write(envelope)
            if let late = held.value.withLock({ value -> Envelope? in defer { value = nil }; return value }) { try await inner.write(late) }
        case .unboundedWrites:
            backlog.push(envelope, to: inner)
        }
    }

    func finish() async {
        await backlog.drain()
        await inner.finish()
    }

    func abort() { inner.abort() }
}

/// The message the reordering bug holds back.
final class Held: Sendable {
    let value = Mutex<Envelope?>(nil)
}

/// The planted "never push back" bug: every write returns at once, a task drains behind.
final class Backlog: Sendable {
    private let tail = Mutex<Task<Void, Never>?>(nil)

    func push(_ envelope: Envelope, to writer: any EnvelopeWriter) {
        tail.withLock { tail in
            let previous = tail
            tail = Task {
                await previous?.value
                try? await writer.write(envelope)
            }
        }
    }

    func drain() async { await tail.withLock { $0 }?.value }
}

/// The counting transport over the in-memory one, for the suite.
struct CountingSubject: TransportTestSubject {
    let fault: CountingTransport.Fault
    let network = InMemoryNetwork()

    var name: String { "counting" }
    var supportsPlaintext: Bool { false }

    func makeTransport(node: NodeID, security: TransportSecurity, limits: TransportTestLimits) throws -> any Transport {
        let inner = InMemoryTransport(localNodeID: node, listenAddress: HostPort(host: "mem-\(node)", port: 0), network: network,
                                      queueCapacity: 64, maxMessageBytes: limits.maxMessageBytes)
        return CountingTransport(wrapping: inner, fault: fault)
    }

    func unreachableAddress() -> HostPort { HostPort(host: "mem-nobody", port: 9) }

    func crash(_ transport: any Transport) {
        ((transport as! CountingTransport).inner as! InMemoryTransport).crash()
    }
}
