import Synchronization

/// The address a transport listens on: settled once (bound, or failed to
/// bind, or shut down first) and awaited by any number of callers of
/// `Transport.listeningAddress()`. The first `settle` wins; later ones are ignored.
public final class BoundAddress: Sendable {
    private struct State {
        var result: Result<HostPort, any Error>?
        var waiters: [CheckedContinuation<HostPort, any Error>] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Settles the address (once) and wakes everyone waiting for it.
    public func settle(_ result: Result<HostPort, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<HostPort, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// The address once settled; throws the bind (or shutdown) error.
    public func value() async throws -> HostPort {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<HostPort, any Error>? in
                if let result = state.result { return result }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
