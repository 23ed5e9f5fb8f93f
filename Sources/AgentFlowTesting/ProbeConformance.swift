public import AgentFlowCore

/// What the probe conformance suite needs: the probe, built against a target
/// that answers and against one that stays silent.
public protocol ProbeTestBed: Sendable {
    /// A probe with `context` (its `timeout` is the budget under test),
    /// aimed at a target that answers when `answering`, and at one that
    /// takes the probe's packets or connection but never answers otherwise.
    func makeProbe(context: ProbeContext, answering: Bool) async throws -> any Probe
}

/// The promises every probe keeps (see `Probe`): it returns a report that
/// names it and says something a person can read, it passes against a
/// target that answers, and it keeps its timeout against one that does not.
///
/// ```swift
/// @Test(arguments: ProbeConformance.checks)
/// func conformance(_ check: ProbeConformance.Check) async throws { try await check.run(MyBed()) }
/// ```
public enum ProbeConformance {
    /// One named promise of the probe contract.
    public typealias Check = ConformanceCheck<any ProbeTestBed>

    /// Every check, in a stable order: pass them to `@Test(arguments:)`.
    public static let checks: [Check] = [
        Check(name: "it returns a report that passes against a target that answers", body: report),
        Check(name: "it keeps its timeout against a silent target", body: timeout),
        Check(name: "it stops when its task is cancelled", body: cancellation),
    ]

    static let node = NodeID("conformance-node")!

    static func report(_ bed: any ProbeTestBed, _ scope: CheckScope) async throws {
        let probe = try await bed.makeProbe(context: ProbeContext(localNodeID: node, timeout: .seconds(5)), answering: true)
        let report = try await scope.within(.seconds(7), "the probe's report") { try await probe.run() }
        try scope.require(report.probe == probe.name, "the report names probe '\(report.probe)', the probe is '\(probe.name)'")
        try scope.require(!report.summary.isEmpty, "the report's summary is empty: say what was found in one line")
        try scope.require(report.outcome == .passed, "against a target that answers the probe should pass; it said: \(report.summary)")
        for fact in report.facts {
            try scope.require(!fact.name.isEmpty && !fact.name.contains(" "), "fact names are snake_case keys, got '\(fact.name)'")
        }
    }

    static func timeout(_ bed: any ProbeTestBed, _ scope: CheckScope) async throws {
        let budget = Duration.seconds(1)
        let probe = try await bed.makeProbe(context: ProbeContext(localNodeID: node, timeout: budget), answering: false)
        let started = ContinuousClock.now
        let outcome: Result<ProbeReport, any Error> = try await scope.within(budget + .seconds(2), "the probe returning against a silent target") {
            do { return .success(try await probe.run()) } catch { return .failure(error) }
        }
        let took = ContinuousClock.now - started
        try scope.require(took <= budget + .milliseconds(500), "with a timeout of \(budget) the probe took \(took)")
        if case .success(let report) = outcome {
            try scope.require(report.outcome == .failed, "a silent target should fail the probe; it said: \(report.summary)")
        }
    }

    static func cancellation(_ bed: any ProbeTestBed, _ scope: CheckScope) async throws {
        let probe = try await bed.makeProbe(context: ProbeContext(localNodeID: node, timeout: .seconds(30)), answering: false)
        let task = Task { _ = try? await probe.run() }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        try scope.require(await scope.finishes(within: .seconds(2)) { await task.value }, "the probe kept running for 2 s after its task was cancelled")
    }
}
