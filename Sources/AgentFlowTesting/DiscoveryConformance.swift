public import AgentFlowCore
import Logging
import Synchronization

/// The promises every discovery backend keeps (see `Discovery`), as checks
/// any test framework can run against a ``DiscoveryTestBed``:
///
/// ```swift
/// @Test(arguments: DiscoveryConformance.checks)
/// func conformance(_ check: DiscoveryConformance.Check) async throws { try await check.run(MyBed()) }
/// ```
public enum DiscoveryConformance {
    /// One named promise of the discovery contract.
    public typealias Check = ConformanceCheck<any DiscoveryTestBed>

    /// Every check, in a stable order: pass them to `@Test(arguments:)`.
    public static let checks: [Check] = [
        Check(name: "the first set is delivered", body: firstSet),
        Check(name: "updates arrive", body: updates),
        Check(name: "an error is a health change, not the end of the stream", body: errorIsHealth),
        Check(name: "cancellation ends the backend cleanly", body: cancellation),
        Check(name: "a slow consumer never makes it buffer without limit", body: slowConsumer),
    ]

    /// The suite's peer number `n`: `peer-n` at `tcp://127.0.0.(10+n):7000`.
    public static func peer(_ n: Int) -> DiscoveredPeer {
        DiscoveredPeer(nodeID: NodeID("peer-\(n)")!, endpoints: [DiscoveredEndpoint(transport: "tcp", address: HostPort(host: "127.0.0.\(10 + n)", port: 7000))])
    }

    static let local = LocalAnnouncement(
        nodeID: NodeID("conformance-node")!, displayName: "conformance-node",
        endpoints: [DiscoveredEndpoint(transport: "tcp", address: HostPort(host: "127.0.0.9", port: 7000))], labels: [:])

    // MARK: The checks

    static func firstSet(_ bed: any DiscoveryTestBed, _ scope: CheckScope) async throws {
        let expected = [peer(1), peer(2)]
        try await bed.setPeers(expected)
        let watch = try await Watch.start(bed)
        defer { watch.stop() }
        try await watch.waitFor(scope, bed, "the first set (peer-1, peer-2)") { $0.health == .healthy && matches($0, expected) }
        try checkNames(watch, scope)
    }

    static func updates(_ bed: any DiscoveryTestBed, _ scope: CheckScope) async throws {
        try await bed.setPeers([peer(1), peer(2)])
        let watch = try await Watch.start(bed)
        defer { watch.stop() }
        try await watch.waitFor(scope, bed, "the first set") { matches($0, [peer(1), peer(2)]) }
        try await bed.setPeers([peer(1), peer(3)])
        try await watch.waitFor(scope, bed, "the update to peer-1, peer-3") { $0.health == .healthy && matches($0, [peer(1), peer(3)]) }
        try await bed.setPeers([peer(1), peer(3), peer(4)])
        try await watch.waitFor(scope, bed, "a peer added (peer-4)") { $0.health == .healthy && matches($0, [peer(1), peer(3), peer(4)]) }
        try checkNames(watch, scope)
    }

    static func errorIsHealth(_ bed: any DiscoveryTestBed, _ scope: CheckScope) async throws {
        let good = [peer(1), peer(2)]
        try await bed.setPeers(good)
        let watch = try await Watch.start(bed)
        defer { watch.stop() }
        try await watch.waitFor(scope, bed, "the first set") { $0.health == .healthy && matches($0, good) }
        try await bed.breakSource()
        let degraded = try await watch.waitFor(scope, bed, "a degraded update after the source broke") {
            if case .degraded = $0.health { true } else { false }
        }
        try scope.require(matches(degraded, good), "a degraded update should keep the last good set, it held \(endpoints(degraded).map(\.description).sorted())")
        try scope.require(watch.ending == nil, "the stream ended when the source broke: \(watch.ending ?? "")")
        try await bed.repairSource()
        try await bed.setPeers([peer(2)])
        try await watch.waitFor(scope, bed, "a healthy update after the source was repaired") { $0.health == .healthy && matches($0, [peer(2)]) }
    }

    static func cancellation(_ bed: any DiscoveryTestBed, _ scope: CheckScope) async throws {
        try await bed.setPeers([peer(1)])
        let watch = try await Watch.start(bed)
        try await watch.waitFor(scope, bed, "the first set") { matches($0, [peer(1)]) }
        watch.stop()
        try scope.require(await scope.finishes(within: .seconds(2)) { await watch.consumer.value }, "the consumer did not end within 2 s of its cancellation")
        guard let before = await bed.sourceReads() else { return }
        // Give a poll already under way time to finish, then expect silence.
        try await Task.sleep(for: bed.refreshInterval * 2)
        let settled = await bed.sourceReads() ?? before
        try await Task.sleep(for: bed.refreshInterval * 3)
        let after = await bed.sourceReads() ?? settled
        try scope.require(after == settled, "the backend kept reading its source after cancellation (\(after - settled) reads in \(bed.refreshInterval * 3))")
    }

    static func slowConsumer(_ bed: any DiscoveryTestBed, _ scope: CheckScope) async throws {
        try await bed.setPeers([peer(1)])
        let discovery = try await bed.makeDiscovery(context: context())
        let stream = discovery.peerSets(announcing: local)
        // Nobody reads while the source changes 20 times.
        let changes = 20
        for n in 1...changes {
            try await bed.setPeers((1...n + 1).map(peer))
            try await Task.sleep(for: bed.refreshInterval + .milliseconds(20))
        }
        let final = (1...changes + 1).map(peer)
        try await Task.sleep(for: bed.refreshInterval * 2)
        let received = Mutex<[PeerSetUpdate]>([])
        let reader = Task {
            for try await update in stream {
                let done = received.withLock { $0.append(update); return matches(update, final) }
                if done { break }
            }
        }
        _ = await scope.finishes(within: patience(bed)) { _ = await reader.result }
        reader.cancel()
        let got = received.withLock { $0 }
        try scope.require(got.last.map { matches($0, final) } == true, "the latest set never reached a slow consumer (\(got.count) updates read)")
        // The newest set, maybe one it was about to replace, and one in flight: never the whole history.
        try scope.require(got.count <= 3, "a consumer that did not read for \(changes) changes then received \(got.count) queued updates; keep only the newest (bufferingNewest(1))")
    }

    // MARK: Helpers

    /// How long a check waits for a change to show: a few refresh intervals,
    /// plus room for a machine busy with other tests (only a failing check waits it out).
    static func patience(_ bed: any DiscoveryTestBed) -> Duration {
        bed.refreshInterval * 4 + .seconds(10)
    }

    static func context() -> DiscoveryContext {
        DiscoveryContext(localNodeID: local.nodeID, dataDirectory: "/nonexistent-agentflow-conformance", logger: Logger(label: "agentflow.conformance"))
    }

    static func endpoints(_ update: PeerSetUpdate) -> Set<DiscoveredEndpoint> {
        Set(update.peers.flatMap(\.endpoints)).union(update.unidentified)
    }

    static func matches(_ update: PeerSetUpdate, _ peers: [DiscoveredPeer]) -> Bool {
        endpoints(update) == Set(peers.flatMap(\.endpoints))
    }

    /// Every peer a backend names must be one the bed was given (`peer-N`).
    static func checkNames(_ watch: Watch, _ scope: CheckScope) throws {
        for update in watch.updates {
            for found in update.peers {
                try scope.require(found.nodeID.rawValue.hasPrefix("peer-"), "the backend reported a peer nobody registered: \(found.nodeID)")
                try scope.require(found.nodeID != local.nodeID, "the backend reported the local node itself")
            }
        }
    }

    /// A consumer that records every update, for checks to wait on.
    final class Watch: Sendable {
        let consumer: Task<Void, Never>
        private let box: Box

        private init(consumer: Task<Void, Never>, box: Box) {
            self.consumer = consumer
            self.box = box
        }

        static func start(_ bed: any DiscoveryTestBed) async throws -> Watch {
            let stream = try await bed.makeDiscovery(context: context()).peerSets(announcing: local)
            let box = Box()
            let consumer = Task {
                do {
                    for try await update in stream { box.state.withLock { $0.updates.append(update) } }
                    if !Task.isCancelled { box.state.withLock { $0.ending = "it finished" } }
                } catch {
                    box.state.withLock { $0.ending = "it threw \(error)" }
                }
            }
            return Watch(consumer: consumer, box: box)
        }

        final class Box: Sendable {
            let state = Mutex<(updates: [PeerSetUpdate], ending: String?)>(([], nil))
        }

        var updates: [PeerSetUpdate] { box.state.withLock { $0.updates } }
        var ending: String? { box.state.withLock { $0.ending } }

        func stop() { consumer.cancel() }

        /// Waits for an update (from now on, or the latest one) that satisfies `predicate`.
        @discardableResult
        func waitFor(_ scope: CheckScope, _ bed: any DiscoveryTestBed, _ what: String, _ predicate: (PeerSetUpdate) -> Bool) async throws -> PeerSetUpdate {
            let patience = DiscoveryConformance.patience(bed)
            let deadline = ContinuousClock.now + patience
            var seen = box.state.withLock { max(0, $0.updates.count - 1) }
            while ContinuousClock.now < deadline {
                let (fresh, ending) = box.state.withLock { ($0.updates.dropFirst(seen), $0.ending) }
                if let hit = fresh.first(where: predicate) { return hit }
                seen += fresh.count
                if let ending { throw scope.fail("waiting for \(what), the stream ended: \(ending)") }
                try await Task.sleep(for: .milliseconds(10))
            }
            let last = updates.last.map { "\($0.health), \(endpoints($0).map(\.description).sorted())" } ?? "none"
            throw scope.fail("\(what) did not arrive within \(patience); last update: \(last)")
        }
    }
}
