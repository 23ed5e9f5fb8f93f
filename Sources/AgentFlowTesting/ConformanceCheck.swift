/// One named promise of a module contract, run against a subject (a
/// transport, a discovery bed, a probe bed). Each suite's `checks` are these;
/// pass them to `@Test(arguments:)` and call `run` with your subject.
public struct ConformanceCheck<Subject: Sendable>: Sendable, CustomStringConvertible {
    /// What the check proves, in one line.
    public let name: String
    let body: @Sendable (Subject, CheckScope) async throws -> Void

    init(name: String, body: @escaping @Sendable (Subject, CheckScope) async throws -> Void) {
        self.name = name
        self.body = body
    }

    public var description: String { name }

    /// Runs the check against `subject`; throws ``ConformanceFailure`` when a promise is broken.
    public func run(_ subject: Subject) async throws {
        try await body(subject, CheckScope(name: name))
    }
}
