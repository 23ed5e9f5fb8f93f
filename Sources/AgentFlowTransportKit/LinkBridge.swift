public import AgentFlowCore
import SwiftProtobuf
public import NIOCore
import Synchronization

/// The loop side of one link: a TCP connection, or one gRPC stream. Called by
/// `LinkBridge` on the link's event loop only.
public protocol LinkSink: AnyObject {
    /// Serialized envelopes to send, in order, with one flush. Each already
    /// carries the transport's prefix (the bridge's `framePrefix`) in its headroom.
    func send(_ messages: [OutboundMessage])
    /// No more envelopes will follow: end the sending half cleanly.
    func finishSending()
    /// The consumer has taken `bytes` of inbound messages off the bridge (flow
    /// control credit: resume socket reads, or grant an HTTP/2 window).
    func inboundConsumed(_ bytes: Int)
    /// Ends the link at once, both ways, without waiting for the peer: the
    /// mesh gave up on a clean close (a peer that never ends its half).
    func abortLink()
}

/// Moves envelopes between one link's event loop and the async tasks that use
/// it, with backpressure both ways and no per-message hop when busy.
///
/// Outbound, `write` serializes on the caller's task and queues the bytes; one
/// scheduled drain on the loop takes every queued message at once, so a busy
/// writer pays one loop hop per batch, not per message. Writers wait while
/// more than `outboundHighWatermark` bytes are queued or unsent, until the
/// sink reports them gone below the low watermark.
///
/// Inbound, the loop `deliver`s decoded envelopes; `deliver` answers whether
/// the buffer is over its watermark (a TCP link then stops reading the
/// socket). As the consumer takes messages the sink is credited, in batches.
public final class LinkBridge: Sendable {
    public struct Limits: Sendable, Hashable {
        public var maxMessageBytes: Int
        public var outboundHighWatermark: Int
        public var outboundLowWatermark: Int
        public var inboundHighWatermark: Int
        /// Consumed bytes gathered before the sink is credited (bounds loop hops per message).
        public var creditBatch: Int

        public init(maxMessageBytes: Int, outboundHighWatermark: Int = 512 * 1024, outboundLowWatermark: Int = 128 * 1024,
                    inboundHighWatermark: Int = 512 * 1024, creditBatch: Int = 32 * 1024) {
            self.maxMessageBytes = maxMessageBytes
            self.outboundHighWatermark = outboundHighWatermark
            self.outboundLowWatermark = outboundLowWatermark
            self.inboundHighWatermark = inboundHighWatermark
            self.creditBatch = creditBatch
        }
    }

    private struct State {
        // Outbound
        var pending: [OutboundMessage] = []
        var unsentBytes = 0
        var drainScheduled = false
        var outboundFinished = false
        var outboundError: TransportError?
        var writersWaiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextWriterID: UInt64 = 0
        // Inbound
        var inbound: [(Envelope, Int)] = []
        var inboundHead = 0
        var inboundBytes = 0
        var inboundPaused = false
        var uncreditedBytes = 0
        var inboundEnded = false
        var inboundError: (any Error)?
        var reader: CheckedContinuation<Envelope?, any Error>?

        mutating func popInbound() -> (Envelope, Int)? {
            guard inboundHead < inbound.count else { return nil }
            let item = inbound[inboundHead]
            inboundHead += 1
            if inboundHead >= 64 && inboundHead * 2 >= inbound.count {
                inbound.removeFirst(inboundHead)
                inboundHead = 0
            }
            return item
        }
    }

    public let limits: Limits
    public let eventLoop: any EventLoop
    private let state = Mutex(State())
    private let sink: NIOLoopBound<any LinkSink>
    private let framePrefix: FramePrefix

    /// Writes a transport's 5-byte prefix into a message's headroom (at the
    /// buffer's reader index), given the payload's size.
    public typealias FramePrefix = @Sendable (_ buffer: inout ByteBuffer, _ payloadCount: Int) -> Void

    /// Create on the link's event loop. `framePrefix` runs on the writer's task,
    /// while the message's buffer is still its own: written later, on the loop,
    /// a shared buffer would be copied whole first.
    public init(sink: any LinkSink, eventLoop: any EventLoop, limits: Limits, framePrefix: @escaping FramePrefix) {
        self.sink = NIOLoopBound(sink, eventLoop: eventLoop)
        self.eventLoop = eventLoop
        self.limits = limits
        self.framePrefix = framePrefix
    }

    // MARK: Consumer side (any task)

    /// Queues one envelope; suspends while the link is backed up.
    public func write(_ envelope: Envelope) async throws {
        var message: OutboundMessage
        do {
            message = try OutboundMessage(envelope)
        } catch {
            throw TransportError(.protocolViolation, "the envelope could not be serialized: \(error)", underlying: error)
        }
        let size = message.payloadCount
        guard size <= limits.maxMessageBytes else {
            throw TransportError(.messageTooLarge, "an envelope of \(size) bytes exceeds this link's limit of \(limits.maxMessageBytes) bytes")
        }
        framePrefix(&message.buffer, size)
        let (schedule, mustWait) = try state.withLock { state throws(TransportError) -> (Bool, Bool) in
            if let error = state.outboundError { throw error }
            if state.outboundFinished { throw TransportError(.linkClosed, "the sending half of this link was finished") }
            state.pending.append(message)
            state.unsentBytes += size
            let schedule = !state.drainScheduled
            state.drainScheduled = true
            return (schedule, state.unsentBytes > limits.outboundHighWatermark)
        }
        if schedule { scheduleDrain() }
        if mustWait { try await waitForRoom() }
    }

    private func waitForRoom() async throws {
        let id = state.withLock { state in
            state.nextWriterID += 1
            return state.nextWriterID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ready: Result<Void, any Error>? = state.withLock { state in
                    if let error = state.outboundError { return .failure(error) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if state.unsentBytes <= limits.outboundLowWatermark { return .success(()) }
                    state.writersWaiting.append((id, continuation))
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.writersWaiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.writersWaiting.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Ends the link at once (see `LinkSink.abortLink`); readers and writers see it closed.
    public func abort() {
        eventLoop.execute { self.sink.value.abortLink() }
    }

    /// Ends the sending half after everything queued has gone.
    public func finishWriting() {
        let schedule = state.withLock { state -> Bool in
            guard !state.outboundFinished, state.outboundError == nil else { return false }
            state.outboundFinished = true
            defer { state.drainScheduled = true }
            return !state.drainScheduled
        }
        if schedule { scheduleDrain() }
    }

    /// The next inbound envelope; nil after a clean end; throws when the link
    /// broke, or `CancellationError` when the reading task is cancelled.
    public func read() async throws -> Envelope? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Envelope?, any Error>) in
                let (result, credit) = state.withLock { state -> (Result<Envelope?, any Error>?, Int) in
                    if let (envelope, size) = state.popInbound() {
                        return (.success(envelope), takeCredit(&state, consumed: size))
                    }
                    if state.inboundEnded {
                        if let error = state.inboundError { return (.failure(error), 0) }
                        return (.success(nil), 0)
                    }
                    if Task.isCancelled { return (.failure(CancellationError()), 0) }
                    precondition(state.reader == nil, "a link has one reader")
                    state.reader = continuation
                    return (nil, 0)
                }
                if credit > 0 { creditSink(credit) }
                if let result { continuation.resume(with: result) }
            }
        } onCancel: {
            let reader = state.withLock { state -> CheckedContinuation<Envelope?, any Error>? in
                defer { state.reader = nil }
                return state.reader
            }
            reader?.resume(throwing: CancellationError())
        }
    }

    /// Accounts for a consumed message; returns the credit to pass to the sink
    /// now (0 to keep gathering): when a paused link has drained to half its
    /// watermark, or a batch of credit has built up.
    private func takeCredit(_ state: inout State, consumed: Int) -> Int {
        state.inboundBytes -= consumed
        state.uncreditedBytes += consumed
        if state.inboundPaused {
            guard state.inboundBytes <= limits.inboundHighWatermark / 2 else { return 0 }
            state.inboundPaused = false
        } else if state.uncreditedBytes < limits.creditBatch {
            return 0
        }
        defer { state.uncreditedBytes = 0 }
        return state.uncreditedBytes
    }

    // MARK: Loop side

    /// Hands a decoded envelope to the consumer. Returns true when the inbound
    /// buffer is over its watermark: stop reading until `inboundConsumed`.
    @discardableResult
    public func deliver(_ envelope: Envelope, wireBytes: Int) -> Bool {
        let (reader, credit, overWatermark) = state.withLock { state -> (CheckedContinuation<Envelope?, any Error>?, Int, Bool) in
            guard !state.inboundEnded else { return (nil, 0, false) }
            state.inboundBytes += wireBytes
            if let reader = state.reader {
                state.reader = nil
                return (reader, takeCredit(&state, consumed: wireBytes), false)
            }
            state.inbound.append((envelope, wireBytes))
            if state.inboundBytes > limits.inboundHighWatermark { state.inboundPaused = true }
            return (nil, 0, state.inboundPaused)
        }
        reader?.resume(returning: envelope)
        // On the loop already: credit directly.
        if credit > 0 { sink.value.inboundConsumed(credit) }
        return overWatermark
    }

    /// Ends the inbound side: cleanly (nil), or with the error the reader sees
    /// after what was already delivered.
    public func finishReading(error: (any Error)? = nil) {
        let reader = state.withLock { state -> CheckedContinuation<Envelope?, any Error>? in
            guard !state.inboundEnded else { return nil }
            state.inboundEnded = true
            state.inboundError = error
            defer { state.reader = nil }
            return state.reader
        }
        if let reader {
            if let error { reader.resume(throwing: error) } else { reader.resume(returning: nil) }
        }
    }

    /// The sink has put `bytes` of queued messages on the wire (or into the
    /// protocol's buffers): wake writers once below the low watermark.
    public func sent(_ bytes: Int) {
        let writers = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.unsentBytes -= bytes
            guard state.unsentBytes <= limits.outboundLowWatermark, !state.writersWaiting.isEmpty else { return [] }
            defer { state.writersWaiting.removeAll() }
            return state.writersWaiting.map(\.continuation)
        }
        for writer in writers { writer.resume() }
    }

    /// The link is gone: fail waiting and future writes, end reading with `error`.
    public func fail(_ error: TransportError) {
        let writers = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            if state.outboundError == nil { state.outboundError = error }
            state.pending.removeAll()
            defer { state.writersWaiting.removeAll() }
            return state.writersWaiting.map(\.continuation)
        }
        for writer in writers { writer.resume(throwing: error) }
        finishReading(error: error)
    }

    private func creditSink(_ bytes: Int) {
        eventLoop.execute { self.sink.value.inboundConsumed(bytes) }
    }

    private func scheduleDrain() {
        eventLoop.execute { self.drain() }
    }

    /// On the loop: send every queued message, then the end if asked for.
    private func drain() {
        let (batch, finish) = state.withLock { state -> ([OutboundMessage], Bool) in
            state.drainScheduled = false
            let batch = state.pending
            state.pending.removeAll(keepingCapacity: true)
            return (batch, state.outboundFinished && state.outboundError == nil)
        }
        let sink = sink.value
        if !batch.isEmpty { sink.send(batch) }
        if finish { sink.finishSending() }
    }
}

extension LinkBridge {
    /// The bridge as the `MeshStream` the mesh sees.
    public func meshStream(peer: PeerIdentity) -> MeshStream {
        MeshStream(peer: peer, inbound: InboundEnvelopes(next: { try await self.read() }), outbound: BridgeWriter(bridge: self),
                   executor: EventLoopTaskExecutor.for(eventLoop))
    }
}

struct BridgeWriter: EnvelopeWriter {
    let bridge: LinkBridge
    func write(_ envelope: Envelope) async throws { try await bridge.write(envelope) }
    func finish() async { bridge.finishWriting() }
    func abort() { bridge.abort() }
}
