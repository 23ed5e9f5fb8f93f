public import AgentFlowCore
import Synchronization
import SwiftProtobuf
import AgentFlowProto

/// A transport whose links are pairs of bounded queues inside one process:
/// real backpressure and ordering, no sockets. The mesh's own tests run on
/// it, and it passes the same conformance suite as the socket transports.
public final class InMemoryTransport: Transport {
    public let name = InMemoryTransportModule.name
    public let localNodeID: NodeID
    private let requestedAddress: HostPort
    private let network: InMemoryNetwork
    private let queueCapacity: Int
    private let maxMessageBytes: Int

    private struct State {
        var shutDown = false
        var shutdownWaiter: CheckedContinuation<Void, Never>?
        var openQueues: [BoundedAsyncQueue<Envelope>] = []
    }

    private let state = Mutex(State())
    private let bound = BoundAddress()

    public init(localNodeID: NodeID, listenAddress: HostPort, network: InMemoryNetwork = .shared, queueCapacity: Int = 64,
                maxMessageBytes: Int = 4 * 1024 * 1024) {
        self.maxMessageBytes = maxMessageBytes
        self.localNodeID = localNodeID
        self.requestedAddress = listenAddress
        self.network = network
        self.queueCapacity = queueCapacity
    }

    public func listen(_ handler: @escaping @Sendable (MeshStream) async -> Void) async throws {
        let (streams, continuation) = AsyncStream.makeStream(of: MeshStream.self)
        let listener = InMemoryNetwork.Listener(nodeID: localNodeID) { stream, queues in
            // Both sides track the link's queues: either side's shutdown or crash ends it.
            let open = self.state.withLock { state -> Bool in
                guard !state.shutDown else { return false }
                state.openQueues.removeAll { $0.isFinished }
                state.openQueues += queues
                return true
            }
            guard open, case .enqueued = continuation.yield(stream) else { return false }
            return true
        }
        let address: HostPort
        do {
            address = try network.bind(requestedAddress, listener: listener)
        } catch {
            bound.settle(.failure(error))
            throw error
        }
        bound.settle(.success(address))
        defer { network.unbind(address) }

        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.waitForShutdown()
                continuation.finish()
            }
            for await stream in streams {
                group.addTask { await handler(stream) }
            }
            group.cancelAll()
        }
    }

    public func listeningAddress() async throws -> HostPort { try await bound.value() }

    public func connect(to address: HostPort, expectedPeer: NodeID?) async throws -> MeshStream {
        if state.withLock({ $0.shutDown }) { throw TransportError(.shutDown, "the transport is shut down") }
        guard let listener = network.listener(at: address) else {
            throw TransportError(.connectionRefused, "nothing listens at memory address \(address)")
        }
        if let expectedPeer, expectedPeer != listener.nodeID {
            throw TransportError(.handshakeFailed, "the node at \(address) is \(listener.nodeID), not \(expectedPeer)")
        }
        let toListener = BoundedAsyncQueue<Envelope>(capacity: queueCapacity)
        let toDialer = BoundedAsyncQueue<Envelope>(capacity: queueCapacity)
        state.withLock { state in
            // Forget links that have ended, so a long-lived transport's bookkeeping stays bounded.
            state.openQueues.removeAll { $0.isFinished }
            state.openQueues += [toListener, toDialer]
        }
        let serverSide = MeshStream(
            peer: PeerIdentity(certifiedNodeID: localNodeID, remoteAddress: "memory:\(localNodeID)", transport: name),
            inbound: InboundEnvelopes(next: { try await toListener.next() }),
            outbound: SizeLimitedWriter(base: QueueEnvelopeWriter(queue: toDialer), maxMessageBytes: maxMessageBytes))
        guard listener.accept(serverSide, [toListener, toDialer]) else {
            throw TransportError(.connectionRefused, "the listener at \(address) is shutting down")
        }
        return MeshStream(
            peer: PeerIdentity(certifiedNodeID: listener.nodeID, remoteAddress: "memory:\(address)", transport: name),
            inbound: InboundEnvelopes(next: { try await toDialer.next() }),
            outbound: SizeLimitedWriter(base: QueueEnvelopeWriter(queue: toListener), maxMessageBytes: maxMessageBytes))
    }

    public func beginGracefulShutdown() {
        let (shutdownWaiter, queues) = state.withLock { state in
            state.shutDown = true
            let shutdownWaiter = state.shutdownWaiter
            state.shutdownWaiter = nil
            let queues = state.openQueues
            state.openQueues.removeAll()
            return (shutdownWaiter, queues)
        }
        bound.settle(.failure(TransportError(.shutDown, "the transport shut down before listening")))
        // Links end cleanly: queued envelopes are still delivered, then the peer sees the end.
        for queue in queues { queue.finish() }
        shutdownWaiter?.resume()
    }

    /// Simulates a crash: every link breaks at once with an error, as a killed process's would.
    public func crash() {
        let queues = state.withLock { state in
            state.shutDown = true
            defer { state.openQueues.removeAll() }
            return state.openQueues
        }
        for queue in queues { queue.finish(throwing: TransportError(.linkClosed, "the peer crashed")) }
        beginGracefulShutdown()
    }

    private func waitForShutdown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let already = state.withLock { state in
                if state.shutDown { return true }
                state.shutdownWaiter = continuation
                return false
            }
            if already { continuation.resume() }
        }
    }
}

/// Registers the in-memory transport as `memory`.
public enum InMemoryTransportModule: TransportModule {
    public struct Options: Sendable, Hashable {
        /// Envelopes buffered per direction before writers wait. Default 64.
        public var queueCapacity: Int
        /// Largest envelope a link carries, in bytes, as on the socket transports. Default 4 MiB.
        public var maxMessageBytes: Int
    }

    public static let name = "memory"
    public static let summary = "links inside one process (tests, examples); no sockets, no TLS"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(
            queueCapacity: try section.value("queue_capacity", default: 64, in: 1...65_536),
            maxMessageBytes: try section.value("max_message_bytes", default: 4 * 1024 * 1024, in: 1_024...(64 * 1024 * 1024)))
    }

    public static func makeTransport(options: Options, context: TransportContext) throws -> any Transport {
        InMemoryTransport(localNodeID: context.localNodeID, listenAddress: context.listenAddress, queueCapacity: options.queueCapacity, maxMessageBytes: options.maxMessageBytes)
    }
}

/// Refuses envelopes over the link's size limit, as the socket transports do,
/// so code tested in memory meets the same limit it will meet on the wire.
struct SizeLimitedWriter: EnvelopeWriter {
    let base: QueueEnvelopeWriter
    let maxMessageBytes: Int

    func write(_ envelope: Envelope) async throws {
        let size = (try envelope.serializedBytes() as [UInt8]).count
        guard size <= maxMessageBytes else {
            throw TransportError(.messageTooLarge, "an envelope of \(size) bytes exceeds this link's limit of \(maxMessageBytes) bytes")
        }
        try await base.write(envelope)
    }

    func finish() async { await base.finish() }

    func abort() { base.abort() }
}
