public import AgentFlowCore
import AgentFlowProto
import Synchronization

/// Which side dialled a link.
public enum LinkDirection: String, Sendable, Codable {
    /// This node dialled.
    case outbound
    /// The peer dialled.
    case inbound
}

/// The I/O handle of one link after its `Hello` exchange: a bounded queue
/// that one writer task drains to the transport. What the link means (its
/// peer, liveness, whether it is still used) is `MeshState`'s; this type only
/// moves envelopes, and is driven by the runner under the node's lock.
public final class PeerLink: Sendable, Identifiable {
    public let id: LinkID
    public let peerID: NodeID
    public let info: LinkInfo
    let outbound: BoundedAsyncQueue<Envelope>
    let stream: MeshStream
    /// Finished when the runner cuts the link: the link's task stops waiting for the peer.
    private let cut: AsyncStream<Void>
    private let cutContinuation: AsyncStream<Void>.Continuation
    private let counts = Mutex<(received: UInt64, sent: UInt64)>((0, 0))

    init(info: LinkInfo, stream: MeshStream, queueCapacity: Int = 1_024) {
        id = info.id
        peerID = info.peerID
        self.info = info
        outbound = BoundedAsyncQueue(capacity: queueCapacity)
        self.stream = stream
        (cut, cutContinuation) = AsyncStream.makeStream(of: Void.self)
    }

    /// Queues without waiting; false when the queue is full (the peer is behind) or the link is closing.
    @discardableResult
    func trySend(_ envelope: Envelope) -> Bool {
        guard outbound.trySend(envelope) else { return false }
        counts.withLock { $0.sent += 1 }
        return true
    }

    /// Queues past the capacity, keeping the order (sync answers).
    func sendInOrder(_ envelope: Envelope) {
        if outbound.forceSend(envelope) { counts.withLock { $0.sent += 1 } }
    }

    /// Ends the link cleanly: `Goodbye` with `reason` after what is queued, then the end of our half.
    func close(reason: String) {
        outbound.finish(after: LinkHandshake.goodbye(reason))
    }

    /// Cuts the link now.
    func abort() {
        outbound.finish()
        stream.outbound.abort()
        cutContinuation.finish()
    }

    func received() { counts.withLock { $0.received += 1 } }

    /// Messages received and sent on this link.
    public var counters: (received: UInt64, sent: UInt64) { counts.withLock { $0 } }

    /// Returns once the runner cut the link.
    func waitForCut() async {
        for await _ in cut {}
    }
}
