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
        public static let username: UInt16 = 0x0006
        public static let messageIntegrity: UInt16 = 0x0008
        public static let errorCode: UInt16 = 0x0009
        public static let xorMappedAddress: UInt16 = 0x0020
        public static let padding: UInt16 = 0x0026
        public static let software: UInt16 = 0x8022
        public static let fingerprint: UInt16 = 0x8028
        /// AgentFlow's own, comprehension-optional (0xC000–0xFFFF, RFC 8489 §18.3):
        /// the signal registry's revision (8 bytes, big-endian) in an
        /// authenticated heartbeat answer, so a node polls `/list` only when the
        /// registry moved. Other STUN clients ignore it.
        public static let agentflowRevision: UInt16 = 0xC0AF
    }

    public struct Attribute: Sendable, Hashable {
        public var type: UInt16
        public var value: [UInt8]
        public init(type: UInt16, value: [UInt8]) {
            self.type = type
            self.value = value
        }

        /// An 8-byte big-endian integer attribute.
        public init(type: UInt16, uint64 number: UInt64) {
            self.init(type: type, value: (0..<8).map { UInt8(truncatingIfNeeded: number >> (56 - 8 * UInt64($0))) })
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

    /// An 8-byte attribute as a big-endian integer; nil when absent or of another size.
    public func uint64Attribute(_ type: UInt16) -> UInt64? {
        guard let value = attribute(type), value.count == 8 else { return nil }
        return value.reduce(0) { $0 << 8 | UInt64($1) }
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
