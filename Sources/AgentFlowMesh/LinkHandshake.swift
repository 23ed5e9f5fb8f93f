public import AgentFlowCore
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Who this node is on the wire: what it says in its `Hello`.
public struct LocalIdentity: Sendable {
    public var nodeID: NodeID
    public var displayName: String
    public var clusterName: String
    /// Unix microseconds of this start: newer runs of a node have larger ones,
    /// which orders its links and event streams across restarts.
    public var incarnation: UInt64
    /// The transports this node listens on, in its order of preference: it
    /// dials a peer on the first of these the peer also offers.
    public var transports: [String]
    public var advertised: [DiscoveredEndpoint]
    public var labels: [String: String]

    /// The preferred transport.
    public var transport: String { transports[0] }

    public init(nodeID: NodeID, displayName: String, clusterName: String, incarnation: UInt64 = UInt64(unixMicros()),
                transports: [String], advertised: [DiscoveredEndpoint], labels: [String: String]) {
        precondition(!transports.isEmpty, "a node speaks at least one transport")
        self.nodeID = nodeID
        self.displayName = displayName
        self.clusterName = clusterName
        self.incarnation = incarnation
        self.transports = transports
        self.advertised = advertised
        self.labels = labels
    }

    public init(nodeID: NodeID, displayName: String, clusterName: String, incarnation: UInt64 = UInt64(unixMicros()),
                transport: String, advertised: [DiscoveredEndpoint], labels: [String: String]) {
        self.init(nodeID: nodeID, displayName: displayName, clusterName: clusterName, incarnation: incarnation,
                  transports: [transport], advertised: advertised, labels: labels)
    }
}

/// The `Hello` exchange that opens every link: both sides send theirs first,
/// then check the other's against what the transport proved.
enum LinkHandshake {
    /// Incompatible changes of meaning bump this.
    static let protocolVersion: UInt32 = 1

    static func hello(for local: LocalIdentity) -> Envelope {
        var hello = Agentflow_Mesh_V1_Hello()
        hello.nodeID = local.nodeID.rawValue
        hello.displayName = local.displayName
        hello.softwareVersion = AgentFlowVersion.current
        hello.protocolVersion = protocolVersion
        hello.supportedTransports = local.transports
        hello.advertisedEndpoints = local.advertised.map(\.wire)
        hello.labels = local.labels
        hello.incarnation = local.incarnation
        hello.clusterName = local.clusterName
        var envelope = Envelope()
        envelope.hello = hello
        return envelope
    }

    /// Checks the peer's first message; returns its node id.
    static func validate(_ first: Envelope?, local: LocalIdentity, peer: PeerIdentity, expected: NodeID?) throws(MeshError) -> (NodeID, Agentflow_Mesh_V1_Hello) {
        guard let first else { throw MeshError(.badHello, "the peer closed the link before saying Hello") }
        guard case .hello(let hello) = first.body else {
            throw MeshError(.badHello, "the peer's first message was not a Hello")
        }
        guard let id = NodeID(hello.nodeID) else {
            throw MeshError(.badHello, "the peer's Hello names no valid node id (\"\(hello.nodeID.prefix(64))\")")
        }
        if let certified = peer.certifiedNodeID, certified != id {
            throw MeshError(.identityMismatch, "the peer says it is \(id) but its certificate was issued to \(certified)")
        }
        if peer.certifiedNodeID == nil, let expected, expected != id {
            throw MeshError(.identityMismatch, "dialled \(expected) but \(id) answered (plaintext link: no certificate to check)")
        }
        guard id != local.nodeID else {
            throw MeshError(.selfConnection, "the address \(peer.remoteAddress) leads back to this node")
        }
        guard hello.clusterName == local.clusterName else {
            throw MeshError(.wrongCluster, "\(id) belongs to cluster \"\(hello.clusterName)\", this node to \"\(local.clusterName)\"")
        }
        guard hello.protocolVersion == protocolVersion else {
            throw MeshError(.incompatibleProtocol, "\(id) speaks mesh protocol \(hello.protocolVersion), this node \(protocolVersion): upgrade the older one")
        }
        return (id, hello)
    }

    static func goodbye(_ reason: String) -> Envelope {
        var envelope = Envelope()
        envelope.goodbye.reason = reason
        return envelope
    }
}

extension DiscoveredEndpoint {
    var wire: Agentflow_Mesh_V1_Endpoint {
        var endpoint = Agentflow_Mesh_V1_Endpoint()
        endpoint.transport = transport
        endpoint.host = address.host
        endpoint.port = UInt32(address.port)
        return endpoint
    }

    init?(wire: Agentflow_Mesh_V1_Endpoint) {
        guard NodeID.isValid(wire.transport), !wire.host.isEmpty, wire.host.utf8.count <= 253, (1...65_535).contains(wire.port),
              HostPort(parsing: HostPort(host: wire.host, port: Int(wire.port)).description) != nil
        else { return nil }
        self.init(transport: wire.transport, address: HostPort(host: wire.host, port: Int(wire.port)))
    }
}
