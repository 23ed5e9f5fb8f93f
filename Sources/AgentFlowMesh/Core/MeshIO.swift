public import AgentFlowCore
public import AgentFlowProto
public import Logging

/// One admitted (or candidate) link, as the runner names it to `MeshState`.
public struct LinkID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: LinkID, b: LinkID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "link#\(rawValue)" }
}

/// A dial `MeshState` asks the runner to make.
public struct DialPlan: Hashable, Sendable {
    /// Who should answer; nil for an address discovery found without an id.
    public var peer: NodeID?
    public var endpoint: DiscoveredEndpoint

    public init(peer: NodeID?, endpoint: DiscoveredEndpoint) {
        self.peer = peer
        self.endpoint = endpoint
    }
}

/// A link whose `Hello` exchange checked out, as the runner reports it.
public struct LinkInfo: Sendable {
    public var id: LinkID
    public var peerID: NodeID
    public var peerName: String
    /// The peer's run, from its Hello.
    public var peerIncarnation: UInt64
    public var advertised: [DiscoveredEndpoint]
    public var labels: [String: String]
    public var direction: LinkDirection
    public var transport: String
    public var remoteAddress: String
    /// When the peer's certificate expires (unix seconds); nil without one.
    public var certificateExpiryUnix: Int64?
    /// The dial that made it, when this node dialled.
    public var dial: DialPlan?

    public init(id: LinkID, peerID: NodeID, peerName: String, peerIncarnation: UInt64, advertised: [DiscoveredEndpoint], labels: [String: String],
                direction: LinkDirection, transport: String, remoteAddress: String, certificateExpiryUnix: Int64? = nil, dial: DialPlan? = nil) {
        self.id = id
        self.peerID = peerID
        self.peerName = peerName
        self.peerIncarnation = peerIncarnation
        self.advertised = advertised
        self.labels = labels
        self.direction = direction
        self.transport = transport
        self.remoteAddress = remoteAddress
        self.certificateExpiryUnix = certificateExpiryUnix
        self.dial = dial
    }
}

/// What happens to a node, fed to `MeshState.handle(_:at:)` by its runner (or the simulator).
public enum MeshInput: Sendable {
    /// The transports listen; these are the endpoints to announce.
    case started(advertised: [DiscoveredEndpoint])
    /// Discovery's latest set.
    case discovered(PeerSetUpdate)
    /// A dial failed before a link was admitted. `selfConnection`: it reached this node itself.
    case dialFailed(DialPlan, reason: String, selfConnection: Bool)
    /// A link passed its handshake; the state answers `.accept` or `.refuse`.
    case linkUp(LinkInfo)
    /// A link ended (the transport closed, or the runner cut it); `error` when it broke.
    case linkDown(LinkID, error: String?)
    /// An envelope arrived on an admitted link.
    case envelope(Envelope, from: LinkID)
    /// A deadline the state asked for (`nextDeadline`) has come.
    case tick
    /// This node's probes found how it can be reached.
    case reachability(PeerReachability)
    /// Graceful shutdown: Goodbye on every link, no new dials.
    case shutdown
}

/// What `MeshState` asks its runner to do, in order.
public enum MeshAction: Sendable {
    case dial(DialPlan)
    /// Keep serving this link (its `linkUp` was admitted).
    case accept(LinkID)
    /// Tell the peer why with a Goodbye, then end the link.
    case refuse(LinkID, reason: String)
    /// Queue without waiting; dropped (and counted) when the peer is behind — a sync repairs it.
    case send(LinkID, Envelope)
    /// Queue past the capacity, keeping the order: traffic that must not be dropped (sync answers).
    case sendInOrder(LinkID, Envelope)
    /// Goodbye with the reason, then end our half; the peer ends its half.
    case close(LinkID, reason: String)
    /// Cut the link now (a dead peer, or one that ignored our Goodbye).
    case abort(LinkID, reason: String)
    /// Write the peer book to its file.
    case persist(PeerBook)
    case log(Logger.Level, String)
    /// Something for the application layer (for example, deliver an update, run a command).
    case effect(any Sendable)
}
