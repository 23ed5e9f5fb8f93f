import AgentFlowSimulation
import Testing

@Suite("Mesh core: a quiet full mesh")
struct FullMeshTests {
    @Test("a full mesh without faults relays nothing: every master's link state is right", arguments: [3, 6, 9])
    func noRelays(nodes: Int) throws {
        for seed in UInt64(1)...20 {
            let report = try MeshSimulation(seed: seed, options: SimulationOptions(nodes: nodes, maxPeers: 0, chaos: .zero, quiet: .seconds(10), eventsPerSecond: 5)).run()
            #expect(report.relayed == 0, "seed \(seed): \(report.relayed) event(s) relayed in a full mesh of \(nodes)")
        }
    }
}
