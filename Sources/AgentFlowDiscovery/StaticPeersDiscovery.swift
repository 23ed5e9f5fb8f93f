public import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The `static` discovery backend: peers listed in a file, re-read when it
/// changes. Adding a peer adds it to the set; removing one removes it (the
/// connection manager then closes its link).
///
/// A file that disappears or stops parsing does not empty the set: the last
/// good set is repeated as `degraded`, with the reason, until the file is
/// fixed. A file that is missing at start yields an empty, degraded set.
public struct StaticPeersDiscovery: Discovery {
    public let name = StaticPeersDiscoveryModule.name
    public let file: String
    public let reloadInterval: Duration

    public init(file: String, reloadInterval: Duration = .seconds(2)) {
        self.file = file
        self.reloadInterval = reloadInterval
    }

    public func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
        let file = file
        let interval = reloadInterval
        let task = Task {
            var lastText: String?
            var lastGood: [DiscoveredPeer] = []
            var lastUpdate: PeerSetUpdate?
            while !Task.isCancelled {
                let update: PeerSetUpdate
                if let text = try? String(contentsOfFile: file, encoding: .utf8) {
                    if text == lastText, let lastUpdate {
                        update = lastUpdate
                    } else {
                        lastText = text
                        do {
                            lastGood = try StaticPeersFile.parse(text, file: file).filter { $0.nodeID != local.nodeID }
                            update = PeerSetUpdate(peers: lastGood, isAuthoritative: true)
                        } catch {
                            update = PeerSetUpdate(peers: lastGood, health: .degraded(reason: "\(error)"))
                        }
                    }
                } else {
                    lastText = nil
                    update = PeerSetUpdate(peers: lastGood, health: .degraded(reason: "cannot read the peers file \(file)"))
                }
                if update != lastUpdate {
                    continuation.yield(update)
                    lastUpdate = update
                }
                try? await Task.sleep(for: interval)
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}

/// Registers the peers-file backend as `static`.
public enum StaticPeersDiscoveryModule: DiscoveryModule {
    public struct Options: Sendable, Hashable {
        /// The peers file. Default `<data_dir>/peers.yml`.
        public var file: String?
        /// How often the file is checked for changes. Default 2s.
        public var reloadInterval: ConfigDuration
    }

    public static let name = "static"
    public static let summary = "peers listed in a YAML/JSON file, re-read when it changes"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(
            file: try section.filePath("file", default: nil, mustExist: section.contains("file")),
            reloadInterval: try section.value("reload_interval", default: .seconds(2), in: .milliseconds(50) ... .seconds(3_600)))
    }

    public static func makeDiscovery(options: Options, context: DiscoveryContext) throws -> any Discovery {
        let file = options.file ?? PathText.join(context.dataDirectory, "peers.yml")
        return StaticPeersDiscovery(file: file, reloadInterval: options.reloadInterval.duration)
    }
}
