public import AgentFlowCore

/// A STUN message (RFC 8489): parsed from and encoded to bytes, no I/O.
///
/// Parsing is strict and bounded: the header must carry the magic cookie,
/// the length must match the datagram, attributes must fit, and a
/// FINGERPRINT, when present, must be last and correct. Anything else is a
/// `STUNError`, never a crash.
public struct STUNMessage: Sendable, Hashable {
    public static let magicCookie: UInt32 = 0x2112_A442
    public static let headerLength = 20

    /// Message types used here.
    public enum MessageType: UInt16, Sendable {
        case bindingRequest = 0x0001
        case bindingSuccess = 0x0101
        case bindingError = 0x0111
        case bindingIndication = 0x0011
    }

    /// Attribute types used here.
    public enum AttributeType {
        public static let mappedAddress: UInt16 = 0x0001
        /// RFC 5780: 4 bytes, flag 0x04 asks the answer to come from the other
        /// IP, 0x02 from the other port.
        public static let changeRequest: UInt16 = 0x0003
        public static let unknownAttributes: UInt16 = 0x000A
        /// RFC 5780: the port the answer is sent to, at the request's source IP.
        public static let responsePort: UInt16 = 0x0027
        /// RFC 5780: the address the answer was sent from (MAPPED-ADDRESS encoding).
        public static let responseOrigin: UInt16 = 0x802B
        /// RFC 5780: the server's address that differs in IP and port from the
        /// one that received the request (MAPPED-ADDRESS encoding).
        public static let otherAddress: UInt16 = 0x802C
        public static let username: UInt16 = 0x0006
        public static let messageIntegrity: UInt16 = 0x0008
        public static let errorCode: UInt16 = 0x0009
        public static let xorMappedAddress: UInt16 = 0x0020
        public static let padding: UInt16 = 0x0026
        public static let software: UInt16 = 0x8022
        public static let fingerprint: UInt16 = 0x8028
        /// AgentFlow's own, comprehension-optional (0xC000–0xFFFF, RFC 8489 §18.3),
        /// in an authenticated heartbeat answer: the signal registry's revision
        /// (8 bytes) and the least seconds between the node's `/list` fetches
        /// (4 bytes), big-endian. A node fetches `/list` only when the registry
        /// moved, and never more often than the server can afford. Other STUN
        /// clients ignore it. See `RegistryState`.
        public static let agentflowRegistry: UInt16 = 0xC0AF
    }

    public struct Attribute: Sendable, Hashable {
        public var type: UInt16
        public var value: [UInt8]
        public init(type: UInt16, value: [UInt8]) {
            self.type = type
            self.value = value
        }
    }

    public var type: UInt16
    /// 12 bytes.
    public var transactionID: [UInt8]
    public var attributes: [Attribute]

    public init(type: MessageType, transactionID: [UInt8], attributes: [Attribute] = []) {
        precondition(transactionID.count == 12, "a STUN transaction id is 12 bytes")
        self.type = type.rawValue
        self.transactionID = transactionID
        self.attributes = attributes
    }

    public func attribute(_ type: UInt16) -> [UInt8]? {
        attributes.first { $0.type == type }?.value
    }

    /// The AGENTFLOW-REGISTRY attribute, decoded; nil when absent or malformed.
    public var registryState: RegistryState? {
        attribute(AttributeType.agentflowRegistry).flatMap(RegistryState.init(value:))
    }

    /// CHANGE-REQUEST's flags: (change IP, change port); nil when absent or malformed.
    public var changeRequest: (ip: Bool, port: Bool)? {
        guard let value = attribute(AttributeType.changeRequest), value.count == 4 else { return nil }
        return (value[3] & 0x04 != 0, value[3] & 0x02 != 0)
    }

    /// The CHANGE-REQUEST attribute asking for the given changes.
    public static func changeRequest(ip: Bool, port: Bool) -> Attribute {
        Attribute(type: AttributeType.changeRequest, value: [0, 0, 0, (ip ? 0x04 : 0) | (port ? 0x02 : 0)])
    }

    /// RESPONSE-PORT's port; nil when absent or malformed.
    public var responsePort: UInt16? {
        guard let value = attribute(AttributeType.responsePort), value.count == 4 else { return nil }
        return UInt16(value[0]) << 8 | UInt16(value[1])
    }

    /// The USERNAME attribute as text.
    public var username: String? {
        attribute(AttributeType.username).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// Why a datagram is not an acceptable STUN message.
public struct STUNError: AgentFlowError, Equatable {
    public let code: String
    public let message: String

    init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// What the signal server tells a node in a heartbeat's answer (AGENTFLOW-REGISTRY).
public struct RegistryState: Sendable, Hashable {
    /// The registry's revision: a node whose list is at it has nothing to fetch.
    public var revision: UInt64
    /// The least seconds between the node's `/list` fetches (0: the node's own interval).
    public var minPollIntervalSeconds: UInt32

    public static let encodedSize = 12

    public init(revision: UInt64, minPollIntervalSeconds: UInt32) {
        self.revision = revision
        self.minPollIntervalSeconds = minPollIntervalSeconds
    }

    init?(value: [UInt8]) {
        guard value.count == Self.encodedSize else { return nil }
        revision = value[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        minPollIntervalSeconds = value[8..<12].reduce(0) { $0 << 8 | UInt32($1) }
    }

    public var attribute: STUNMessage.Attribute {
        .init(type: STUNMessage.AttributeType.agentflowRegistry,
              value: (0..<8).map { UInt8(truncatingIfNeeded: revision >> (56 - 8 * UInt64($0))) }
                + (0..<4).map { UInt8(truncatingIfNeeded: minPollIntervalSeconds >> (24 - 8 * UInt32($0))) })
    }
}
