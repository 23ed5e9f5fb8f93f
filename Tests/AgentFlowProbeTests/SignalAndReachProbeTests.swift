import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowProbes
import AgentFlowTLS
import AgentFlowTesting
import Foundation
import Synchronization
import Testing

/// The `signal` and `reach` probes against a real signal server on loopback.
@Suite("signal and reach probes")
struct SignalAndReachProbeTests {
    /// A data folder holding `id`'s signal secret, as the discovery backend leaves it.
    static func dataFolder(secret: String) throws -> String {
        let folder = NSTemporaryDirectory() + "probe-data-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try (secret + "\n").write(toFile: folder + "/signal-secret", atomically: true, encoding: .utf8)
        return folder
    }

    @Test("signal: every step passes against a server that knows the node; the authenticated STUN answer is checked")
    func signalPasses() async throws {
        let signal = try await SignalUnderTest.start("")
        defer { Task { await signal.stop() } }
        let secret = try await signal.register("probe-node")
        let context = ProbeContext(localNodeID: NodeID("probe-node")!, timeout: .seconds(10), dataDirectory: try Self.dataFolder(secret: secret))
        let report = try await SignalProbeModule.makeProbe(options: .init(url: signal.base), context: context).run()
        #expect(report.outcome == .passed, "\(report)")
        for step in ["dns_ms", "tcp_connect_ms", "api_ms", "stun_ms", "stun_auth_ms"] {
            #expect(report.fact(step) != nil, "\(step) missing: \(report)")
        }
        // The wrong secret: the authenticated STUN step fails, and says so.
        let wrong = ProbeContext(localNodeID: NodeID("probe-node")!, timeout: .seconds(10), dataDirectory: try Self.dataFolder(secret: String(repeating: "f", count: 32)))
        let refused = try await SignalProbeModule.makeProbe(options: .init(url: signal.base), context: wrong).run()
        #expect(refused.outcome == .failed)
        #expect(refused.fact("failed_step") == "stun_auth", "\(refused)")
    }

    @Test("signal: the failing step is named — dns, tcp, auth")
    func signalSteps() async throws {
        let context = ProbeContext(localNodeID: NodeID("probe-node")!, timeout: .seconds(10))
        let dns = try await SignalProbeModule.makeProbe(options: .init(url: "http://no-such-host.invalid:7070"), context: context).run()
        #expect(dns.fact("failed_step") == "dns", "\(dns)")
        let tcp = try await SignalProbeModule.makeProbe(options: .init(url: "http://127.0.0.1:\(try freePort())"), context: context).run()
        #expect(tcp.fact("failed_step") == "tcp", "\(tcp)")
        let signal = try await SignalUnderTest.start("auth:\n  token: probe-cluster-token-0123456789\n")
        defer { Task { await signal.stop() } }
        let auth = try await SignalProbeModule.makeProbe(options: .init(url: signal.base, token: "a-wrong-token-0123456789"), context: context).run()
        #expect(auth.fact("failed_step") == "auth", "\(auth)")
        #expect(auth.summary.contains("token"))
    }

    @Test("reach: a registered node with a TLS listener is reachable; without a secret the probe says to start the master")
    func reach() async throws {
        let signal = try await SignalUnderTest.start("")
        defer { Task { await signal.stop() } }
        let certificates = try TestCertificates()
        let tls = try await TestListener(.tls(try serverTLSContext(certificates)))
        defer { Task { await tls.close() } }
        let secret = try await signal.register("reach-node")
        let context = ProbeContext(localNodeID: NodeID("reach-node")!, timeout: .seconds(10), dataDirectory: try Self.dataFolder(secret: secret),
                                   listening: [DiscoveredEndpoint(transport: "tcp", address: HostPort(host: "0.0.0.0", port: tls.port))])
        let report = try await ReachProbeModule.makeProbe(options: .init(signalURL: signal.base), context: context).run()
        #expect(report.outcome == .passed, "\(report)")
        #expect(report.fact("reachable") == "yes")
        let fresh = ProbeContext(localNodeID: NodeID("reach-node")!, timeout: .seconds(10), dataDirectory: NSTemporaryDirectory() + "nothing-\(UUID().uuidString.prefix(6))",
                                 listening: context.listening)
        let unregistered = try await ReachProbeModule.makeProbe(options: .init(signalURL: signal.base), context: fresh).run()
        #expect(unregistered.outcome == .failed)
        #expect(unregistered.summary.contains("has not registered"), "\(unregistered)")
    }

    /// Both probes keep the probe contract against a server that answers and one that accepts and stays silent.
    struct Bed: ProbeTestBed {
        let probe: String
        func makeProbe(context: ProbeContext, answering: Bool) async throws -> any Probe {
            if answering {
                let signal = try await SignalUnderTest.start("reach:\n  min_interval: 1s\n")
                Self.keep.withLock { $0.append(signal) }
                let id = "\(context.localNodeID)"
                let secret = try await signal.register(id)
                let listener = try await TestListener(.answer([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]))
                Self.listeners.withLock { $0.append(listener) }
                var full = context
                full.dataDirectory = try SignalAndReachProbeTests.dataFolder(secret: secret)
                full.listening = [DiscoveredEndpoint(transport: "tcp", address: HostPort(host: "0.0.0.0", port: listener.port))]
                return probe == "signal"
                    ? try SignalProbeModule.makeProbe(options: .init(url: signal.base), context: full)
                    : try ReachProbeModule.makeProbe(options: .init(signalURL: signal.base), context: full)
            }
            let silent = try await TestListener(.silent)
            Self.listeners.withLock { $0.append(silent) }
            var full = context
            full.dataDirectory = try SignalAndReachProbeTests.dataFolder(secret: String(repeating: "a", count: 32))
            full.listening = [DiscoveredEndpoint(transport: "tcp", address: HostPort(host: "0.0.0.0", port: 1))]
            let url = "http://127.0.0.1:\(silent.port)"
            return probe == "signal"
                ? try SignalProbeModule.makeProbe(options: .init(url: url), context: full)
                : try ReachProbeModule.makeProbe(options: .init(signalURL: url), context: full)
        }
        static let keep = Mutex<[SignalUnderTest]>([])
        static let listeners = Mutex<[TestListener]>([])
    }

    @Test(arguments: ["signal", "reach"], ProbeConformance.checks)
    func conformance(_ probe: String, _ check: ProbeConformance.Check) async throws {
        try await check.run(Bed(probe: probe))
    }
}
