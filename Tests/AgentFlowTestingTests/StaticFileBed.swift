import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowTesting
import Foundation
import Synchronization

/// The `static` backend's source is its peers file: the bed writes it,
/// breaks it (garbage that does not parse) and repairs it. A `fault`
/// wraps the backend in a planted bug.
final class StaticFileBed: DiscoveryTestBed {
    enum Fault: Sendable {
        case none
        /// Re-yields every update into an unbounded buffer.
        case unboundedBuffer
        /// Ends the stream at the first degraded update.
        case endsOnError
        /// A backend of its own that reads the file for ever, cancelled or not.
        case ignoresCancellation
    }

    let file: String
    let fault: Fault
    let refreshInterval: Duration = .milliseconds(100)
    private let current = Mutex<[DiscoveredPeer]>([])
    let reads = Atomic<Int>(0)

    init(fault: Fault = .none) throws {
        self.fault = fault
        file = NSTemporaryDirectory() + "agentflow-static-bed-\(UUID().uuidString.prefix(8)).yml"
    }

    deinit { try? FileManager.default.removeItem(atPath: file) }

    func makeDiscovery(context: DiscoveryContext) async throws -> any Discovery {
        let inner = StaticPeersDiscovery(file: file, reloadInterval: refreshInterval)
        switch fault {
        case .none: return inner
        case .unboundedBuffer, .endsOnError: return FaultyDiscovery(inner: inner, fault: fault)
        case .ignoresCancellation: return RunawayDiscovery(bed: self)
        }
    }

    func setPeers(_ peers: [DiscoveredPeer]) async throws {
        current.withLock { $0 = peers }
        try write(peers)
    }

    func breakSource() async throws {
        try "peers: [unclosed".write(toFile: file, atomically: true, encoding: .utf8)
    }

    func repairSource() async throws {
        try write(current.withLock { $0 })
    }

    func sourceReads() async -> Int? { fault == .ignoresCancellation ? reads.load(ordering: .relaxed) : nil }

    private func write(_ peers: [DiscoveredPeer]) throws {
        let lines = peers.map { "  - id: \($0.nodeID)\n    endpoints: [\($0.endpoints.map(\.description).joined(separator: ", "))]" }
        try ("peers:" + (lines.isEmpty ? " []" : "\n" + lines.joined(separator: "\n")) + "\n").write(toFile: file, atomically: true, encoding: .utf8)
    }
}

/// The planted buffering and ending bugs.
struct FaultyDiscovery: Discovery {
    let inner: any Discovery
    let fault: StaticFileBed.Fault
    var name: String { "faulty" }

    func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .unbounded)
        let fault = fault
        let source = inner.peerSets(announcing: local)
        let pump = Task {
            for try await update in source {
                continuation.yield(update)
                if fault == .endsOnError, update.health != .healthy { break }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in pump.cancel() }
        return stream
    }
}

/// The planted "keeps polling after cancellation" bug.
struct RunawayDiscovery: Discovery {
    let bed: StaticFileBed
    var name: String { "runaway" }

    func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
        let bed = bed
        Task.detached {
            for _ in 0..<200 {
                bed.reads.add(1, ordering: .relaxed)
                if let text = try? String(contentsOfFile: bed.file, encoding: .utf8), let peers = try? StaticPeersFile.parse(text, file: bed.file) {
                    continuation.yield(PeerSetUpdate(peers: peers))
                } else {
                    continuation.yield(PeerSetUpdate(peers: [], health: .degraded(reason: "unreadable")))
                }
                try? await Task.sleep(for: bed.refreshInterval)
            }
        }
        return stream
    }
}
