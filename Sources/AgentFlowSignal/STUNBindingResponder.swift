import AgentFlowCore
public import AgentFlowSTUN
public import Foundation

/// Answers STUN binding requests (RFC 8489) and turns authenticated ones into heartbeats.
///
/// - Every valid binding request gets XOR-MAPPED-ADDRESS: the node learns its public address.
/// - A request with USERNAME = node id and MESSAGE-INTEGRITY keyed by the node's
///   STUN password (hex SHA-256 of its secret) refreshes that node's record and
///   observed address, like `POST /heartbeat`; the answer is signed the same way.
/// - Malformed datagrams, bad credentials and requests smaller than their answer
///   get no answer at all (counted): a spoofed source can never be sent more
///   bytes than it sent (no amplification).
public struct STUNBindingResponder: Sendable {
    let registry: SignalRegistry

    public enum Outcome: String, Sendable {
        case answered, heartbeat, malformed, badCredentials = "bad_credentials", unknownNode = "unknown_node", tooSmall = "too_small", ignored
    }

    public init(registry: SignalRegistry) {
        self.registry = registry
    }

    public func respond(to datagram: [UInt8], from source: STUNAddress, now: Date = Date()) async -> (reply: [UInt8]?, outcome: Outcome) {
        let request: STUNMessage
        do {
            request = try STUNMessage.parse(datagram)
        } catch {
            return (nil, .malformed)
        }
        guard request.type == STUNMessage.MessageType.bindingRequest.rawValue else { return (nil, .ignored) }
        var response = STUNMessage(
            type: .bindingSuccess, transactionID: request.transactionID,
            attributes: [.init(type: STUNMessage.AttributeType.xorMappedAddress, value: source.xorEncoded(transactionID: request.transactionID))])
        var key: [UInt8]?
        var outcome = Outcome.answered
        if let username = request.username {
            guard request.attribute(STUNMessage.AttributeType.messageIntegrity) != nil, NodeID.isValid(username) else { return (nil, .badCredentials) }
            guard let digest = try? await registry.store.secretDigest(of: username) else { return (nil, .unknownNode) }
            let password = Array(digest.utf8)
            guard (try? STUNMessage.verifyIntegrity(of: datagram, key: password)) == true else { return (nil, .badCredentials) }
            switch try? await registry.store.heartbeat(nodeID: username, secretDigest: digest, observedAddress: source.ipDescription, now: now) {
            case .refreshed?: outcome = .heartbeat
            default: return (nil, .unknownNode)
            }
            key = password
        }
        guard let reply = try? response.encodeAttributes(key: key), reply.count <= datagram.count else { return (nil, .tooSmall) }
        return (reply, outcome)
    }
}

extension STUNMessage {
    fileprivate mutating func encodeAttributes(key: [UInt8]?) throws -> [UInt8] {
        try encode(integrityKey: key, fingerprint: true)
    }
}
