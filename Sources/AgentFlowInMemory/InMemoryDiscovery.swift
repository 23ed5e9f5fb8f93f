public import AgentFlowCore
import Synchronization

/// A directory of nodes inside one process: each node announces itself and
/// sees every other announced node. The in-process stand-in for a signal server.
public final class InMemoryDirectory: Sendable {
    /// Directories by name, so config can pick one (`discovery: {kind: memory, directory: lab}`).
    public static func named(_ name: String) -> InMemoryDirectory {
        directories.withLock { directories in
            if let existing = directories[name] { return existing }
            let directory = InMemoryDirectory()
            directories[name] = directory
            return directory
        }
    }

    private static let directories = Mutex<[String: InMemoryDirectory]>([:])

    private struct Member {
        var announcement: LocalAnnouncement
        var continuation: AsyncThrowingStream<PeerSetUpdate, any Error>.Continuation
    }

    private let members = Mutex<[NodeID: Member]>([:])

    public init() {}

    /// Announces `local` and streams the set of every other member until cancelled.
    public func join(_ local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
        continuation.onTermination = { [weak self] _ in self?.leave(local.nodeID) }
        members.withLock { $0[local.nodeID] = Member(announcement: local, continuation: continuation) }
        publish()
        return stream
    }

    /// Node ids currently announced.
    public var memberIDs: [NodeID] { members.withLock { $0.keys.sorted() } }

    private func leave(_ id: NodeID) {
        _ = members.withLock { $0.removeValue(forKey: id) }
        publish()
    }

    private func publish() {
        let snapshot = members.withLock { $0 }
        for (id, member) in snapshot {
            let peers = snapshot.values.filter { $0.announcement.nodeID != id }.map {
                DiscoveredPeer(nodeID: $0.announcement.nodeID, displayName: $0.announcement.displayName,
                               endpoints: $0.announcement.endpoints, labels: $0.announcement.labels)
            }.sorted { $0.nodeID < $1.nodeID }
            member.continuation.yield(PeerSetUpdate(peers: peers))
        }
    }
}

/// Discovery through an `InMemoryDirectory`.
public struct InMemoryDiscovery: Discovery {
    public let name = InMemoryDiscoveryModule.name
    public let directory: InMemoryDirectory

    public init(directory: InMemoryDirectory) {
        self.directory = directory
    }

    public func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        directory.join(local)
    }
}

/// Registers in-memory discovery as `memory`.
public enum InMemoryDiscoveryModule: DiscoveryModule {
    public struct Options: Sendable, Hashable {
        /// Which directory to join. Default `default`.
        public var directory: String
    }

    public static let name = "memory"
    public static let summary = "a directory inside one process (tests, examples)"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(directory: try section.value("directory", default: "default"))
    }

    public static func makeDiscovery(options: Options, context: DiscoveryContext) throws -> any Discovery {
        InMemoryDiscovery(directory: .named(options.directory))
    }
}
