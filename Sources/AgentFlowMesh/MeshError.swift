public import AgentFlowCore

/// Why the mesh refused or lost a link, or could not keep its state.
public struct MeshError: AgentFlowError {
    public enum Code: String, Sendable {
        /// The first message was not a valid `Hello`, or came too late.
        case badHello = "bad_hello"
        /// The `Hello` claims another node id than the peer's certificate proves.
        case identityMismatch = "identity_mismatch"
        case wrongCluster = "wrong_cluster"
        case incompatibleProtocol = "incompatible_protocol"
        /// The address led back to this node.
        case selfConnection = "self_connection"
        /// The peer said `Goodbye`, or this node closed the link on purpose.
        case refused = "refused"
        case peerTimeout = "peer_timeout"
        case peerBookUnreadable = "peer_book_unreadable"
        case noEndpoint = "no_endpoint"
    }

    public let kind: Code
    public let message: String

    public init(_ kind: Code, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var code: String { kind.rawValue }
}
