public import AgentFlowCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Every peer this node has seen, with where to reach it and when it was last
/// known alive; kept in a small JSON file in the data folder.
///
/// This is what lets the mesh outlive its discovery backend: a master
/// restarted while the signal server is down redials the peers in its book,
/// and peers hand each other their books (`PeerExchange`), so knowing one live
/// member is enough to find all of them. An entry is refreshed only by first-
/// hand news (a live link, discovery, or a peer's own newer timestamp), so a
/// dead node is not kept alive by gossip and ages out after `maxAge`.
///
/// Not thread-safe: owned by the connection manager (an actor).
public struct PeerBook: Sendable {
    public struct Entry: Codable, Sendable, Hashable {
        public var nodeID: NodeID
        public var name: String
        /// `transport://host:port`, most useful first.
        public var endpoints: [String]
        public var labels: [String: String]
        /// Unix microseconds when this node (or the peer that told us) last had first-hand news of it.
        public var lastSeenMicros: Int64

        enum CodingKeys: String, CodingKey {
            case nodeID = "node_id", name, endpoints, labels, lastSeenMicros = "last_seen_unix_micros"
        }

        public var discoveredEndpoints: [DiscoveredEndpoint] {
            endpoints.compactMap(DiscoveredEndpoint.init(parsing:))
        }
    }

    private struct FileFormat: Codable {
        var version = 1
        var peers: [Entry]
    }

    public let file: String?
    public let maxAge: Duration
    public private(set) var entries: [NodeID: Entry] = [:]
    /// Changed since the last save.
    public private(set) var isDirty = false
    /// Peers were added or removed (not just refreshed) since the last save: worth saving at once.
    public private(set) var hasNewMembers = false

    /// An empty book that persists to `file` (nil: memory only).
    public init(file: String?, maxAge: Duration) {
        self.file = file
        self.maxAge = maxAge
    }

    /// Reads the file. A missing file is an empty book; an unreadable one is
    /// reported (the caller logs it) and treated as empty, never fatal.
    public mutating func load() throws {
        guard let file, FileManager.default.fileExists(atPath: file) else { return }
        let data = try Data(contentsOf: URL(filePath: file))
        do {
            let decoded = try JSONDecoder().decode(FileFormat.self, from: data)
            entries = Dictionary(decoded.peers.map { ($0.nodeID, $0) }, uniquingKeysWith: { $0.lastSeenMicros >= $1.lastSeenMicros ? $0 : $1 })
        } catch {
            throw MeshError(.peerBookUnreadable, "the peer book \(file) cannot be read (\(error)); starting with an empty one")
        }
    }

    /// Writes the file atomically (temporary file, then rename), mode 0600.
    public mutating func save() throws {
        guard let file, isDirty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(FileFormat(peers: entries.values.sorted { $0.nodeID < $1.nodeID }))
        let directory = PathText.parent(of: file)
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let temporary = file + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw MeshError(.peerBookUnreadable, "cannot write the peer book to \(temporary)")
        }
        // rename(2) replaces atomically, whether or not the book existed.
        guard rename(temporary, file) == 0 else {
            throw MeshError(.peerBookUnreadable, "cannot move the peer book into place at \(file): \(String(cString: strerror(errno)))")
        }
        isDirty = false
        hasNewMembers = false
    }

    /// Marks the book saved: a runner wrote a copy of it (`MeshAction.persist`).
    public mutating func markSaved() {
        isDirty = false
        hasNewMembers = false
    }

    /// Records first-hand news of a peer: its endpoints replace the old ones.
    /// Returns true when the peer was not in the book.
    @discardableResult
    public mutating func record(_ nodeID: NodeID, name: String?, endpoints: [DiscoveredEndpoint], labels: [String: String]?, seenAtMicros: Int64) -> Bool {
        let isNew = entries[nodeID] == nil
        var entry = entries[nodeID] ?? Entry(nodeID: nodeID, name: name ?? nodeID.rawValue, endpoints: [], labels: [:], lastSeenMicros: 0)
        let before = entry
        if let name { entry.name = name }
        if !endpoints.isEmpty { entry.endpoints = endpoints.map(\.description) }
        if let labels { entry.labels = labels }
        entry.lastSeenMicros = max(entry.lastSeenMicros, seenAtMicros)
        if entry != before || isNew {
            entries[nodeID] = entry
            isDirty = true
            if isNew || entry.endpoints != before.endpoints { hasNewMembers = true }
        }
        return isNew
    }

    /// Merges what a peer told us. Newer news wins; older news only adds an
    /// unknown peer. Returns the ids that were new.
    public mutating func merge(_ infos: [Entry], nowMicros: Int64) -> [NodeID] {
        var added: [NodeID] = []
        for info in infos where isFresh(info.lastSeenMicros, nowMicros: nowMicros) {
            if let existing = entries[info.nodeID], existing.lastSeenMicros >= info.lastSeenMicros { continue }
            if record(info.nodeID, name: info.name, endpoints: info.discoveredEndpoints, labels: info.labels, seenAtMicros: info.lastSeenMicros) {
                added.append(info.nodeID)
            }
        }
        return added
    }

    public mutating func remove(_ nodeID: NodeID) {
        if entries.removeValue(forKey: nodeID) != nil {
            isDirty = true
            hasNewMembers = true
        }
    }

    /// Drops entries older than `maxAge`, except `keep` (peers linked or discovered now).
    /// Returns the ids dropped.
    @discardableResult
    public mutating func expire(nowMicros: Int64, keep: Set<NodeID>) -> [NodeID] {
        let stale = entries.values.filter { !keep.contains($0.nodeID) && !isFresh($0.lastSeenMicros, nowMicros: nowMicros) }.map(\.nodeID)
        for id in stale { entries.removeValue(forKey: id) }
        if !stale.isEmpty {
            isDirty = true
            hasNewMembers = true
        }
        return stale
    }

    func isFresh(_ micros: Int64, nowMicros: Int64) -> Bool {
        nowMicros - micros <= maxAge.inMicroseconds
    }
}
