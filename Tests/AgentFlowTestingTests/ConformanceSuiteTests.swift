import AgentFlowCore
import AgentFlowTesting
import Testing

/// The conformance suites, used as an outside module uses them: a module
/// written here passes, and the same module with a planted bug fails the
/// check that guards against that bug. A suite that passes a broken module is
/// no suite.
@Suite("AgentFlowTesting suites", .serialized)
struct ConformanceSuiteTests {
    @Test("a transport defined only in this test target passes the whole transport suite", arguments: TransportConformance.checks)
    func outsideTransportPasses(check: TransportConformance.Check) async throws {
        try await check.run(CountingSubject(fault: .none))
    }

    @Test("a transport that reorders messages fails the ordering checks")
    func reorderingCaught() async throws {
        let ordering = TransportConformance.checks.filter { $0.name.hasPrefix("streams both ways") }
        #expect(!ordering.isEmpty)
        let failure = await #expect(throws: ConformanceFailure.self) { try await ordering[0].run(CountingSubject(fault: .reorder)) }
        #expect(failure?.message.contains("arrived where") == true, "\(String(describing: failure))")
    }

    @Test("a transport that never pushes back fails the backpressure check")
    func unboundedWritesCaught() async throws {
        let check = try #require(TransportConformance.checks.first { $0.name.contains("slow reader") })
        let failure = await #expect(throws: ConformanceFailure.self) { try await check.run(CountingSubject(fault: .unboundedWrites)) }
        #expect(failure?.message.contains("stall") == true, "\(String(describing: failure))")
    }

    @Test("the static peers file backend passes the discovery suite", arguments: DiscoveryConformance.checks)
    func staticDiscoveryPasses(check: DiscoveryConformance.Check) async throws {
        try await check.run(try StaticFileBed())
    }

    @Test("a backend that buffers every update fails the slow-consumer check")
    func unboundedDiscoveryCaught() async throws {
        let check = try #require(DiscoveryConformance.checks.first { $0.name.contains("slow consumer") })
        let failure = await #expect(throws: ConformanceFailure.self) { try await check.run(try StaticFileBed(fault: .unboundedBuffer)) }
        #expect(failure?.message.contains("queued updates") == true, "\(String(describing: failure))")
    }

    @Test("a backend that ends its stream on an error fails the health check")
    func endingDiscoveryCaught() async throws {
        let check = try #require(DiscoveryConformance.checks.first { $0.name.contains("health change") })
        let failure = await #expect(throws: ConformanceFailure.self) { try await check.run(try StaticFileBed(fault: .endsOnError)) }
        #expect(failure?.message.contains("the stream ended") == true, "\(String(describing: failure))")
    }

    @Test("a backend that keeps polling after cancellation fails the cancellation check")
    func uncancellableDiscoveryCaught() async throws {
        let check = try #require(DiscoveryConformance.checks.first { $0.name.contains("cancellation") })
        let failure = await #expect(throws: ConformanceFailure.self) { try await check.run(try StaticFileBed(fault: .ignoresCancellation)) }
        #expect(failure?.message.contains("kept reading") == true, "\(String(describing: failure))")
    }

    @Test("a UDP echo probe passes the probe suite", arguments: ProbeConformance.checks)
    func probePasses(check: ProbeConformance.Check) async throws {
        try await check.run(UDPEchoBed(ignoresTimeout: false))
    }

    @Test("a probe that ignores its timeout fails the timeout check")
    func slowProbeCaught() async throws {
        let check = try #require(ProbeConformance.checks.first { $0.name.contains("timeout") })
        let failure = await #expect(throws: ConformanceFailure.self) { try await check.run(UDPEchoBed(ignoresTimeout: true)) }
        #expect(failure?.message.contains("silent target") == true, "\(String(describing: failure))")
    }
}
