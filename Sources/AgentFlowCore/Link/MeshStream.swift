public import AgentFlowProto

/// One established, authenticated link to a peer: envelopes in, envelopes out.
///
/// A transport hands these out (from `connect` and to its `listen` handler)
/// only after its security stage has run, so `peer` is what the handshake
/// proved. The mesh then exchanges `Hello`s over it and checks the claimed
/// node id against `peer.certifiedNodeID`.
public struct MeshStream: Sendable {
    /// What the transport knows about the other end.
    public let peer: PeerIdentity
    /// Envelopes from the peer, in order. Ends (nil) when the peer closed the
    /// link cleanly, throws when it broke.
    public let inbound: InboundEnvelopes
    /// Sends envelopes to the peer.
    public let outbound: any EnvelopeWriter
    /// Where code that serves this link runs without a thread hop per message
    /// (a socket link's event loop), or nil. A task that mostly reads and
    /// writes this link can prefer it: `Task(executorPreference: stream.executor)`.
    public let executor: (any TaskExecutor)?

    public init(peer: PeerIdentity, inbound: InboundEnvelopes, outbound: any EnvelopeWriter, executor: (any TaskExecutor)? = nil) {
        self.peer = peer
        self.inbound = inbound
        self.outbound = outbound
        self.executor = executor
    }
}

/// What a transport learned about the remote end while establishing a link.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The node id the peer's certificate was issued for; nil on plaintext links.
    public var certifiedNodeID: NodeID?
    /// Remote address as seen by this side (`127.0.0.1:53122`).
    public var remoteAddress: String
    /// Name of the transport that carries the link.
    public var transport: String
    /// When the certificate the peer proved itself with expires (Unix seconds);
    /// nil on plaintext links. The mesh closes the link at that moment.
    public var certificateExpiry: Int64?

    public init(certifiedNodeID: NodeID?, remoteAddress: String, transport: String, certificateExpiry: Int64? = nil) {
        self.certifiedNodeID = certifiedNodeID
        self.remoteAddress = remoteAddress
        self.transport = transport
        self.certificateExpiry = certificateExpiry
    }

    public var description: String {
        "\(certifiedNodeID.map(\.rawValue) ?? "unauthenticated")@\(remoteAddress) via \(transport)"
    }
}

/// The sending half of a link.
public protocol EnvelopeWriter: Sendable {
    /// Sends one envelope. Suspends while the peer (or the network) cannot
    /// take more: that is the link's backpressure. Throws once the link is closed.
    func write(_ envelope: AgentFlowProto.Agentflow_Mesh_V1_Envelope) async throws
    /// Closes the sending half cleanly; the peer's inbound sequence ends.
    func finish() async
    /// Closes the whole link at once, without a clean end: for a peer that
    /// does not finish its half after ours. Reads and writes then fail.
    func abort()
}

/// The receiving half of a link, as an async sequence of envelopes.
public struct InboundEnvelopes: AsyncSequence, Sendable {
    public typealias Element = AgentFlowProto.Agentflow_Mesh_V1_Envelope
    public typealias Failure = any Error

    private let nextEnvelope: @Sendable () async throws -> Element?

    /// Wraps a transport's read function. It is called by one consumer at a time.
    public init(next: @escaping @Sendable () async throws -> Element?) {
        self.nextEnvelope = next
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let nextEnvelope: @Sendable () async throws -> Element?
        public mutating func next() async throws -> Element? { try await nextEnvelope() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(nextEnvelope: nextEnvelope) }
}

/// An `EnvelopeWriter` that feeds a `BoundedAsyncQueue`: the in-memory
/// transport's writer, and a building block for others.
public struct QueueEnvelopeWriter: EnvelopeWriter {
    let queue: BoundedAsyncQueue<AgentFlowProto.Agentflow_Mesh_V1_Envelope>

    public init(queue: BoundedAsyncQueue<AgentFlowProto.Agentflow_Mesh_V1_Envelope>) {
        self.queue = queue
    }

    public func write(_ envelope: AgentFlowProto.Agentflow_Mesh_V1_Envelope) async throws {
        do {
            try await queue.send(envelope)
        } catch is QueueClosedError {
            throw TransportError(.linkClosed, "the link is closed")
        }
    }

    public func finish() async { queue.finish() }

    public func abort() { queue.finish(throwing: TransportError(.linkClosed, "the link was aborted")) }
}

public typealias Envelope = AgentFlowProto.Agentflow_Mesh_V1_Envelope
