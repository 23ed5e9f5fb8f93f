/// A broken promise found by a conformance check: what was expected, what
/// happened, and which check saw it. Thrown, not recorded, so the suites work
/// from swift-testing, XCTest or a plain executable alike.
public struct ConformanceFailure: Error, CustomStringConvertible {
    /// The name of the check that failed.
    public var check: String
    /// What was expected and what happened.
    public var message: String

    /// A failure of `check`, saying `message`.
    public init(check: String, _ message: String) {
        self.check = check
        self.message = message
    }

    public var description: String { "conformance check '\(check)' failed: \(message)" }
}

/// The context a check runs in: its name, for failures it throws.
struct CheckScope: Sendable {
    let name: String

    func fail(_ message: String) -> ConformanceFailure { ConformanceFailure(check: name, message) }

    /// Throws a failure with `message` unless `condition` holds.
    func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw fail(message()) }
    }

    /// Runs `body`; a body still running after `duration` is cancelled and the check fails with `what`.
    func within<T: Sendable>(_ duration: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: duration)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw fail("\(what) did not happen within \(duration)")
            }
            return value
        }
    }

    /// Whether `body` ends within `duration`. Unlike `within`, it never waits
    /// for a body that ignores cancellation, so the check itself cannot hang.
    func finishes(within duration: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
        let (signal, continuation) = AsyncStream<Bool>.makeStream()
        let work = Task {
            await body()
            continuation.yield(true)
        }
        let timer = Task {
            try? await Task.sleep(for: duration)
            continuation.yield(false)
        }
        var iterator = signal.makeAsyncIterator()
        let finished = await iterator.next() ?? false
        timer.cancel()
        if !finished { work.cancel() }
        return finished
    }
}
