public import AgentFlowCore
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How the mesh keeps its links; from the `mesh:` block of a master's config.
public struct MeshOptions: Sendable {
    /// Direct links to keep; 0 is a full mesh (see `MeshTopology`).
    public var maxPeers: Int
    /// Longest wait for the peer's `Hello` once the transport has connected.
    public var handshakeTimeout: Duration
    /// Ping every link this often (RTT; proof of life on an idle link).
    public var pingInterval: Duration
    /// A link silent for half of this is suspected and probed through
    /// neighbours; silent for all of it, and no neighbour heard the peer, it is dead.
    public var peerTimeout: Duration
    public var backoff: ReconnectBackoff
    public var peerExchangeInterval: Duration
    /// Where the peer book lives; nil keeps it in memory only.
    public var peerBookFile: String?
    public var peerBookMaxAge: Duration
    /// How long a link that this node closed may wait for the peer's end before it is cut.
    public var closeGrace: Duration

    public init(maxPeers: Int = 0, handshakeTimeout: Duration = .seconds(5), pingInterval: Duration = .seconds(1), peerTimeout: Duration = .seconds(4),
                backoff: ReconnectBackoff = ReconnectBackoff(), peerExchangeInterval: Duration = .seconds(30), peerBookFile: String? = nil,
                peerBookMaxAge: Duration = .seconds(72 * 3_600), closeGrace: Duration = .seconds(2)) {
        self.maxPeers = maxPeers
        self.handshakeTimeout = handshakeTimeout
        self.pingInterval = pingInterval
        self.peerTimeout = peerTimeout
        self.backoff = backoff
        self.peerExchangeInterval = peerExchangeInterval
        self.peerBookFile = peerBookFile
        self.peerBookMaxAge = peerBookMaxAge
        self.closeGrace = closeGrace
    }

    /// The options with a polling period, from before the mesh had deadlines.
    @available(*, deprecated, message: "the mesh does not poll: its timers are MeshState's deadlines; drop tick")
    public init(maxPeers: Int = 0, handshakeTimeout: Duration = .seconds(5), pingInterval: Duration = .seconds(5), peerTimeout: Duration = .seconds(20),
                backoff: ReconnectBackoff = ReconnectBackoff(), peerExchangeInterval: Duration = .seconds(30), peerBookFile: String? = nil,
                peerBookMaxAge: Duration = .seconds(72 * 3_600), closeGrace: Duration = .seconds(2), tick: Duration) {
        self.init(maxPeers: maxPeers, handshakeTimeout: handshakeTimeout, pingInterval: pingInterval, peerTimeout: peerTimeout, backoff: backoff,
                  peerExchangeInterval: peerExchangeInterval, peerBookFile: peerBookFile, peerBookMaxAge: peerBookMaxAge, closeGrace: closeGrace)
    }

    /// The options a master's config asks for; the peer book lives in its data folder.
    public init(_ settings: MasterConfig.MeshSettings, dataDirectory: String) {
        self.init(
            maxPeers: settings.maxPeers, handshakeTimeout: settings.dialTimeout.duration, pingInterval: settings.pingInterval.duration,
            peerTimeout: settings.peerTimeout.duration, backoff: ReconnectBackoff(maximum: settings.reconnectMaxDelay.duration),
            peerExchangeInterval: settings.peerExchangeInterval.duration,
            peerBookFile: PathText.join(dataDirectory, "peer-book.json"),
            peerBookMaxAge: settings.peerBookMaxAge.duration)
    }
}
