public import Synchronization

/// A bounded single-consumer queue with backpressure: `send` suspends while
/// `capacity` elements wait, `next` suspends while none do. `finish` ends it,
/// optionally with an error the consumer sees after draining what was queued.
///
/// Links use it so a slow reader slows its writers instead of growing memory.
///
/// The hot paths are `@inlinable` so that each link's element type gets a
/// specialised copy: unspecialised, every call paid for generic metadata lookups.
public final class BoundedAsyncQueue<Element: Sendable>: Sendable {
    @usableFromInline
    struct State {
        @usableFromInline var buffer: [Element] = []
        @usableFromInline var head = 0
        @usableFromInline var waitingSenders: [(id: UInt64, element: Element, continuation: CheckedContinuation<Void, any Error>)] = []
        @usableFromInline var waitingReceiver: CheckedContinuation<Element?, any Error>?
        @usableFromInline var finished = false
        @usableFromInline var failure: (any Error)?
        @usableFromInline var nextSenderID: UInt64 = 0

        @usableFromInline init() {}

        @inlinable var count: Int { buffer.count - head }

        @inlinable
        mutating func popFirst() -> Element? {
            guard head < buffer.count else { return nil }
            let element = buffer[head]
            head += 1
            if head > 64 && head * 2 > buffer.count {
                buffer.removeFirst(head)
                head = 0
            }
            return element
        }
    }

    public let capacity: Int
    @usableFromInline let state = Mutex(State())

    public init(capacity: Int) {
        precondition(capacity > 0, "capacity must be positive")
        self.capacity = capacity
    }

    /// Queues `element`, suspending while the queue is full. Throws
    /// `QueueClosedError` once finished, and `CancellationError` if the
    /// sending task is cancelled while it waits.
    public func send(_ element: Element) async throws {
        let step: SendStep = try state.withLock { state throws -> SendStep in
            if state.finished { throw QueueClosedError() }
            if let receiver = state.waitingReceiver {
                state.waitingReceiver = nil
                receiver.resume(returning: element)
                return .done
            }
            if state.count < capacity {
                state.buffer.append(element)
                return .done
            }
            state.nextSenderID += 1
            return .wait(state.nextSenderID)
        }
        guard case .wait(let id) = step else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: (any Error)? = state.withLock { state in
                    if state.finished { return QueueClosedError() }
                    if Task.isCancelled { return CancellationError() }
                    if let receiver = state.waitingReceiver {
                        state.waitingReceiver = nil
                        receiver.resume(returning: element)
                        continuation.resume()
                        return nil
                    }
                    if state.count < capacity {
                        state.buffer.append(element)
                        continuation.resume()
                        return nil
                    }
                    state.waitingSenders.append((id, element, continuation))
                    return nil
                }
                if let resumeNow { continuation.resume(throwing: resumeNow) }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waitingSenders.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waitingSenders.remove(at: index).continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    /// Queues `element` without waiting: false when the queue is full or finished.
    /// For senders that must never block (a broadcast that a lagging peer repairs by resync).
    @inlinable
    public func trySend(_ element: Element) -> Bool {
        enqueue(element, pastCapacity: false)
    }

    /// Queues `element` past the capacity (never waits): false only once finished.
    /// For traffic that must keep its place in line and must not be dropped,
    /// such as the answer to a sync request; its size is bounded by the caller.
    /// While it holds the queue over capacity, `trySend` refuses.
    @discardableResult @inlinable
    public func forceSend(_ element: Element) -> Bool {
        enqueue(element, pastCapacity: true)
    }

    /// Hands `element` to a waiting reader or queues it, without waiting. Without
    /// `pastCapacity` it refuses when full, or while senders wait their turn.
    @inlinable
    func enqueue(_ element: Element, pastCapacity: Bool) -> Bool {
        let receiver = state.withLock { state -> CheckedContinuation<Element?, any Error>?? in
            if state.finished { return .none }
            if !pastCapacity && (state.count >= capacity || !state.waitingSenders.isEmpty) { return .none }
            if let receiver = state.waitingReceiver {
                state.waitingReceiver = nil
                return .some(receiver)
            }
            state.buffer.append(element)
            return .some(nil)
        }
        guard let receiver else { return false }
        receiver?.resume(returning: element)
        return true
    }

    /// Queues `last` (past the capacity) and ends the queue after it, in one
    /// step: nothing sent later can overtake it. False when already finished.
    @discardableResult
    public func finish(after last: Element) -> Bool {
        let (receiver, senders) = state.withLock { state -> (CheckedContinuation<Element?, any Error>??, [CheckedContinuation<Void, any Error>]) in
            if state.finished { return (.none, []) }
            state.finished = true
            // Senders already waiting keep their place before `last`.
            for sender in state.waitingSenders { state.buffer.append(sender.element) }
            let senders = state.waitingSenders.map(\.continuation)
            state.waitingSenders.removeAll()
            if let receiver = state.waitingReceiver, state.count == 0 {
                // A waiting reader means nothing is queued: it takes `last` now.
                state.waitingReceiver = nil
                return (.some(receiver), senders)
            }
            state.buffer.append(last)
            return (.some(nil), senders)
        }
        for sender in senders { sender.resume() }
        guard let receiver else { return false }
        receiver?.resume(returning: last)
        return true
    }

    /// The next element; nil after `finish()` once drained; throws the finishing
    /// error, or `CancellationError` if the waiting task is cancelled.
    @inlinable
    public func next() async throws -> Element? {
        if let element = try takeIfReady() { return element }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Element?, any Error>) in
                let ready: Result<Element?, any Error>? = state.withLock { state in
                    if let element = state.popFirst() {
                        admitOneSender(&state)
                        return .success(element)
                    }
                    if state.finished {
                        if let failure = state.failure { return .failure(failure) }
                        return .success(nil)
                    }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    precondition(state.waitingReceiver == nil, "BoundedAsyncQueue supports one consumer")
                    state.waitingReceiver = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let receiver = state.withLock { state -> CheckedContinuation<Element?, any Error>? in
                defer { state.waitingReceiver = nil }
                return state.waitingReceiver
            }
            receiver?.resume(throwing: CancellationError())
        }
    }

    @inlinable
    func takeIfReady() throws -> Element?? {
        try state.withLock { state throws -> Element?? in
            if let element = state.popFirst() {
                admitOneSender(&state)
                return .some(element)
            }
            if state.finished {
                if let failure = state.failure { throw failure }
                return .some(nil)
            }
            return nil
        }
    }

    @inlinable
    func admitOneSender(_ state: inout State) {
        guard !state.waitingSenders.isEmpty else { return }
        let sender = state.waitingSenders.removeFirst()
        state.buffer.append(sender.element)
        sender.continuation.resume()
    }

    /// Ends the queue. Queued elements are still delivered; then the consumer
    /// sees nil, or `error` when given. Waiting senders fail with `QueueClosedError`.
    public func finish(throwing error: (any Error)? = nil) {
        let (receiver, senders, deliverNil) = state.withLock { state in
            guard !state.finished else { return (nil as CheckedContinuation<Element?, any Error>?, [CheckedContinuation<Void, any Error>](), false) }
            state.finished = true
            state.failure = error
            let senders = state.waitingSenders.map(\.continuation)
            state.waitingSenders.removeAll()
            let receiver = state.waitingReceiver
            state.waitingReceiver = nil
            return (receiver, senders, true)
        }
        if deliverNil, let receiver {
            if let error { receiver.resume(throwing: error) } else { receiver.resume(returning: nil) }
        }
        for sender in senders { sender.resume(throwing: QueueClosedError()) }
    }

    /// True once `finish` was called.
    public var isFinished: Bool { state.withLock { $0.finished } }

    /// Elements waiting to be read.
    public var bufferedCount: Int { state.withLock { $0.count } }
}

/// What `send` does after its first look at the queue.
private enum SendStep { case done, wait(UInt64) }

/// The queue was finished: nothing more can be sent.
public struct QueueClosedError: Error, Sendable, CustomStringConvertible {
    public init() {}
    public var description: String { "the queue is closed" }
}
