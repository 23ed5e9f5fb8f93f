import AgentFlowCore
import AgentFlowTesting
import DNSDiscovery
import Foundation
import Synchronization
import Testing

/// The `dns` backend passes the same discovery suite as AgentFlow's own,
/// resolving from a hosts-format file the bed controls.
@Suite("DNS discovery conformance", .serialized)
struct DNSDiscoveryConformanceTests {
    @Test("every discovery check", arguments: DiscoveryConformance.checks)
    func conformance(check: DiscoveryConformance.Check) async throws {
        try await check.run(HostsFileBed())
    }

    @Test("the system resolver (getaddrinfo) resolves localhost")
    func systemResolver() async throws {
        let addresses = try await SystemResolver().resolve("localhost")
        #expect(addresses.contains("127.0.0.1") || addresses.contains("::1"), "\(addresses)")
        await #expect(throws: NameResolutionError.self) { _ = try await SystemResolver().resolve("no such name!") }
    }
}

/// The suite's peers are at 127.0.0.(10+N):7000 over tcp: the bed lists their
/// addresses under one name, breaks the file by removing it, and counts lookups.
final class HostsFileBed: DiscoveryTestBed {
    let file = NSTemporaryDirectory() + "agentflow-dns-bed-\(UUID().uuidString.prefix(8)).hosts"
    let refreshInterval: Duration = .milliseconds(100)
    private let current = Mutex<[DiscoveredPeer]>([])
    private let lookups = Atomic<Int>(0)

    deinit { try? FileManager.default.removeItem(atPath: file) }

    func makeDiscovery(context: DiscoveryContext) async throws -> any Discovery {
        DNSDiscovery(name: "masters.agentflow.internal", port: 7000, transport: "tcp", interval: refreshInterval,
                     resolver: CountingResolver(inner: HostsFileResolver(file: file), bed: self))
    }

    func setPeers(_ peers: [DiscoveredPeer]) async throws {
        current.withLock { $0 = peers }
        try write(peers)
    }

    func breakSource() async throws { try FileManager.default.removeItem(atPath: file) }
    func repairSource() async throws { try write(current.withLock { $0 }) }
    func sourceReads() async -> Int? { lookups.load(ordering: .relaxed) }

    func counted() { lookups.add(1, ordering: .relaxed) }

    private func write(_ peers: [DiscoveredPeer]) throws {
        let lines = ["# written by the conformance bed", "127.0.0.1 localhost"]
            + peers.flatMap(\.endpoints).map { "\($0.address.host) masters.agentflow.internal" }
        try lines.joined(separator: "\n").appending("\n").write(toFile: file, atomically: true, encoding: .utf8)
    }
}

struct CountingResolver: NameResolver {
    let inner: any NameResolver
    let bed: HostsFileBed

    func resolve(_ name: String) async throws -> [String] {
        bed.counted()
        return try await inner.resolve(name)
    }
}
