public import AgentFlowCore
public import AgentFlowProto
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
import Synchronization

/// Which side dialled a link.
public enum LinkDirection: String, Sendable, Codable {
    /// This node dialled.
    case outbound
    /// The peer dialled.
    case inbound
}

/// One live, admitted link to a peer, after the `Hello` exchange.
///
/// Everything sent to the peer goes through `send`, into a bounded queue
/// that one writer task drains to the transport: senders are slowed (never
/// dropped) when the peer is slow. `close` says `Goodbye`, ends the queue
/// and with it the sending half; the link task then waits (bounded) for the
/// peer to end its half.
public final class PeerLink: Sendable, Identifiable {
    private static let nextID = Atomic<UInt64>(1)

    public let id: UInt64
    public let peerID: NodeID
    public let peerName: String
    /// The peer's run, from its Hello (see `LocalIdentity.incarnation`).
    public let peerIncarnation: UInt64
    public let advertised: [DiscoveredEndpoint]
    public let labels: [String: String]
    public let direction: LinkDirection
    public let transport: String
    public let remoteAddress: String
    public let connectedAt: Date
    /// The same moment on the monotonic clock (ages and timeouts).
    let connectedInstant = ContinuousClock.now
    let outbound: BoundedAsyncQueue<Envelope>
    let stream: MeshStream

    private struct State {
        var lastReceived = ContinuousClock.now
        var receivedMessages: UInt64 = 0
        var sentMessages: UInt64 = 0
        var roundTrip: Duration?
        var closeReason: String?
        var closeRequestedAt: ContinuousClock.Instant?
        var goodbyeReceived: String?
    }

    private let state = Mutex(State())

    init(peerID: NodeID, hello: Agentflow_Mesh_V1_Hello, direction: LinkDirection, stream: MeshStream, queueCapacity: Int = 1_024) {
        id = Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        self.peerID = peerID
        peerName = hello.displayName.isEmpty ? peerID.rawValue : String(hello.displayName.prefix(128))
        peerIncarnation = hello.incarnation
        advertised = hello.advertisedEndpoints.prefix(16).compactMap(DiscoveredEndpoint.init(wire:))
        labels = hello.labels
        self.direction = direction
        transport = stream.peer.transport
        remoteAddress = stream.peer.remoteAddress
        connectedAt = Date()
        outbound = BoundedAsyncQueue(capacity: queueCapacity)
        self.stream = stream
    }

    /// Queues an envelope for the peer; suspends while the queue is full.
    /// Throws once the link is closing or closed.
    public func send(_ envelope: Envelope) async throws {
        do {
            try await outbound.send(envelope)
        } catch is QueueClosedError {
            throw TransportError(.linkClosed, "the link to \(peerID) is closed")
        }
        state.withLock { $0.sentMessages += 1 }
    }

    /// Queues an envelope without waiting; false when the queue is full (the
    /// peer is behind) or the link is closing.
    @discardableResult
    public func trySend(_ envelope: Envelope) -> Bool {
        guard outbound.trySend(envelope) else { return false }
        state.withLock { $0.sentMessages += 1 }
        return true
    }

    /// Ends the link cleanly: `Goodbye` with `reason`, then the end of our half.
    public func close(reason: String) {
        let first = state.withLock { state -> Bool in
            guard state.closeReason == nil else { return false }
            state.closeReason = reason
            state.closeRequestedAt = .now
            return true
        }
        guard first else { return }
        let queue = outbound
        let goodbye = LinkHandshake.goodbye(reason)
        Task {
            try? await queue.send(goodbye)
            queue.finish()
        }
    }

    /// Why this node closed the link, if it did.
    public var closeReason: String? { state.withLock { $0.closeReason } }
    var closeRequestedAt: ContinuousClock.Instant? { state.withLock { $0.closeRequestedAt } }

    /// The reason in the peer's `Goodbye`, if it sent one.
    public var goodbyeReceived: String? { state.withLock { $0.goodbyeReceived } }
    func receivedGoodbye(_ reason: String) { state.withLock { $0.goodbyeReceived = String(reason.prefix(256)) } }

    /// Round trip of the last answered Ping.
    public var roundTrip: Duration? { state.withLock { $0.roundTrip } }
    func recordRoundTrip(_ duration: Duration) { state.withLock { $0.roundTrip = duration } }

    var lastReceived: ContinuousClock.Instant { state.withLock { $0.lastReceived } }
    func touch() {
        state.withLock {
            $0.lastReceived = .now
            $0.receivedMessages += 1
        }
    }

    public var counters: (received: UInt64, sent: UInt64) { state.withLock { ($0.receivedMessages, $0.sentMessages) } }
}
