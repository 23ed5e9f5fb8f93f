import AgentFlowCore
public import AgentFlowSTUN
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// Answers STUN binding requests (RFC 8489) and turns authenticated ones into heartbeats.
///
/// - Every valid binding request gets XOR-MAPPED-ADDRESS: the node learns its public address.
/// - A request with USERNAME = node id and MESSAGE-INTEGRITY keyed by the node's
///   STUN password (hex SHA-256 of its secret) refreshes that node's record and
///   observed address, like `POST /heartbeat`; the answer is signed the same way
///   and carries the registry's revision and poll pacing (AGENTFLOW-REGISTRY).
/// - A plain request (no credentials) gets the minimal answer every public STUN
///   server gives: XOR-MAPPED-ADDRESS, plus FINGERPRINT only when the answer
///   still fits in the request's size. A bare 20-byte request (what coturn's
///   `turnutils_stunclient` and WebRTC stacks send) gets 32 bytes for IPv4, 44
///   for IPv6: at most 1.6× (2.2×) what a spoofed source sent.
/// - An authenticated answer is never larger than its request (our client pads),
///   and malformed datagrams and bad credentials get no answer at all (counted).
public struct STUNBindingResponder: Sendable {
    let registry: SignalRegistry

    public enum Outcome: String, Sendable, CaseIterable {
        case answered, heartbeat, malformed, badCredentials = "bad_credentials", unknownNode = "unknown_node", tooSmall = "too_small", ignored
        /// CHANGE-REQUEST or RESPONSE-PORT without `stun.alternate`.
        case unsupported
    }

    /// The four addresses, when `stun.alternate` is set.
    let rfc5780: RFC5780Addresses?

    public init(registry: SignalRegistry, rfc5780: RFC5780Addresses? = nil) {
        self.registry = registry
        self.rfc5780 = rfc5780
    }

    /// A parsed binding request, waiting for its credentials to be checked.
    struct Pending {
        var request: STUNMessage
        var username: String?
    }

    /// Step 1, no I/O: parse and classify. Returns an outcome instead when there is nothing to look up.
    static func prepare(_ datagram: [UInt8]) -> Result<Pending, OutcomeError> {
        guard let request = try? STUNMessage.parse(datagram) else { return .failure(OutcomeError(outcome: .malformed)) }
        guard request.type == STUNMessage.MessageType.bindingRequest.rawValue else { return .failure(OutcomeError(outcome: .ignored)) }
        guard let username = request.username else { return .success(Pending(request: request, username: nil)) }
        guard request.attribute(STUNMessage.AttributeType.messageIntegrity) != nil, NodeID.isValid(username) else {
            return .failure(OutcomeError(outcome: .badCredentials))
        }
        return .success(Pending(request: request, username: username))
    }

    /// Step 2, no I/O: check integrity with the node's stored digest (its STUN password).
    static func verify(_ datagram: [UInt8], digest: String?) -> Outcome? {
        guard let digest else { return .unknownNode }
        guard (try? STUNMessage.verifyIntegrity(of: datagram, key: Array(digest.utf8))) == true else { return .badCredentials }
        return nil
    }

    /// Step 3, no I/O: the signed (or plain) answer, or nothing when it would be larger than the request.
    ///
    /// A heartbeat's answer also carries the registry's state (AGENTFLOW-REGISTRY,
    /// signed with the rest), so the node skips its `/list` poll while nothing
    /// changed. It is left out, never the answer, when the request was too small
    /// to carry it.
    ///
    /// A plain request is where RFC 5780 applies (`socket`, `rfc5780`): see `plainAnswer`.
    static func answer(_ pending: Pending, datagramSize: Int, source: STUNAddress, key: [UInt8]?, registry: RegistryState? = nil, outcome: Outcome,
                       socket: STUNSocketRole = .primary, rfc5780: RFC5780Addresses? = nil) -> STUNAnswer {
        guard let key else {
            return plainAnswer(pending.request, datagramSize: datagramSize, source: source, socket: socket, rfc5780: rfc5780)
        }
        let mapped = source.xorEncoded(transactionID: pending.request.transactionID)
        let baseSize = STUNMessage.headerLength + 4 + mapped.count + 24 + 8
        var attributes: [STUNMessage.Attribute] = [.init(type: STUNMessage.AttributeType.xorMappedAddress, value: mapped)]
        if let registry, baseSize + 4 + RegistryState.encodedSize <= datagramSize {
            attributes.append(registry.attribute)
        }
        let response = STUNMessage(type: .bindingSuccess, transactionID: pending.request.transactionID, attributes: attributes)
        guard let reply = try? response.encode(integrityKey: key, fingerprint: true), reply.count <= datagramSize else { return STUNAnswer(nil, .tooSmall) }
        return STUNAnswer(reply, outcome, from: socket)
    }

    /// A plain request's answer: XOR-MAPPED-ADDRESS always; RESPONSE-ORIGIN and
    /// OTHER-ADDRESS (RFC 5780) and then FINGERPRINT only while the answer still
    /// fits in the request's size — so an RFC 5780 client pads its requests
    /// (ours does; coturn's `turnutils_natdiscovery` with `-P`).
    ///
    /// CHANGE-REQUEST picks the socket the answer leaves from, RESPONSE-PORT the
    /// port it goes to at the request's own source IP. Without `rfc5780` a
    /// request that asks for either gets a 420 error naming them (when that fits),
    /// since both attributes are comprehension-required.
    static func plainAnswer(_ request: STUNMessage, datagramSize: Int, source: STUNAddress, socket: STUNSocketRole, rfc5780: RFC5780Addresses?) -> STUNAnswer {
        let change = request.changeRequest ?? (false, false)
        let responsePort = request.responsePort
        let asksRFC5780 = change.ip || change.port || responsePort != nil
        if request.attribute(STUNMessage.AttributeType.changeRequest).map({ $0.count != 4 }) == true
            || request.attribute(STUNMessage.AttributeType.responsePort).map({ $0.count != 4 }) == true {
            return STUNAnswer(nil, .malformed)
        }
        guard let rfc5780 else {
            guard asksRFC5780 else { return plainMapped(request, datagramSize: datagramSize, source: source, socket: socket, extra: []) }
            var unknown: [UInt8] = []
            if request.attribute(STUNMessage.AttributeType.changeRequest) != nil { unknown += [0x00, 0x03] }
            if responsePort != nil { unknown += [0x00, 0x27] }
            let error = STUNMessage(type: .bindingError, transactionID: request.transactionID, attributes: [
                .init(type: STUNMessage.AttributeType.errorCode, value: [0, 0, 4, 20]),
                .init(type: STUNMessage.AttributeType.unknownAttributes, value: unknown),
            ])
            guard let reply = try? error.encode(fingerprint: false), reply.count <= datagramSize else { return STUNAnswer(nil, .unsupported) }
            return STUNAnswer(reply, .unsupported, from: socket)
        }
        let from = STUNSocketRole(otherIP: socket.otherIP != change.ip, otherPort: socket.otherPort != change.port)
        let extra: [STUNMessage.Attribute] = [
            .init(type: STUNMessage.AttributeType.responseOrigin, value: rfc5780.address(of: from).plainEncoded),
            .init(type: STUNMessage.AttributeType.otherAddress, value: rfc5780.address(of: socket.opposite).plainEncoded),
        ]
        var answer = plainMapped(request, datagramSize: datagramSize, source: source, socket: from, extra: extra)
        answer.toPort = responsePort
        return answer
    }

    /// XOR-MAPPED-ADDRESS, then as many of `extra` and FINGERPRINT as fit in `datagramSize`.
    private static func plainMapped(_ request: STUNMessage, datagramSize: Int, source: STUNAddress, socket: STUNSocketRole, extra: [STUNMessage.Attribute]) -> STUNAnswer {
        var attributes: [STUNMessage.Attribute] = [.init(type: STUNMessage.AttributeType.xorMappedAddress, value: source.xorEncoded(transactionID: request.transactionID))]
        var size = STUNMessage.headerLength + 4 + attributes[0].value.count
        let extraSize = extra.reduce(0) { $0 + 4 + ($1.value.count + 3) & ~3 }
        if size + extraSize <= datagramSize {
            attributes += extra
            size += extraSize
        }
        let response = STUNMessage(type: .bindingSuccess, transactionID: request.transactionID, attributes: attributes)
        guard let reply = try? response.encode(fingerprint: size + 8 <= datagramSize) else { return STUNAnswer(nil, .malformed) }
        return STUNAnswer(reply, .answered, from: socket)
    }

    struct OutcomeError: Error { let outcome: Outcome }

    func state(_ revision: UInt64) -> RegistryState {
        RegistryState(revision: revision, minPollIntervalSeconds: UInt32(clamping: registry.minPollIntervalSeconds))
    }

    /// Answers one datagram through any store (awaiting its lookups).
    public func respond(to datagram: [UInt8], from source: STUNAddress, observedIP: String? = nil, on socket: STUNSocketRole = .primary, now: Date = Date()) async -> STUNAnswer {
        let pending: Pending
        switch Self.prepare(datagram) {
        case .failure(let error): return STUNAnswer(nil, error.outcome)
        case .success(let value): pending = value
        }
        guard let username = pending.username else {
            return Self.answer(pending, datagramSize: datagram.count, source: source, key: nil, outcome: .answered, socket: socket, rfc5780: rfc5780)
        }
        let digest = try? await registry.store.secretDigest(of: username)
        if let refused = Self.verify(datagram, digest: digest) { return STUNAnswer(nil, refused) }
        guard case .refreshed(let revision)? = try? await registry.store.heartbeat(nodeID: username, secretDigest: digest!, observedAddress: observedIP ?? source.ipDescription, now: now) else {
            return STUNAnswer(nil, .unknownNode)
        }
        return Self.answer(pending, datagramSize: datagram.count, source: source, key: Array(digest!.utf8), registry: state(revision), outcome: .heartbeat, socket: socket)
    }

    /// Answers one datagram without suspending, for stores that can be read
    /// and written synchronously (memory): runs on the UDP event loop itself.
    func respondNow(to datagram: [UInt8], from source: STUNAddress, observedIP: String? = nil, on socket: STUNSocketRole = .primary, store: any SynchronousHeartbeatStore, now: Date = Date()) -> STUNAnswer {
        let pending: Pending
        switch Self.prepare(datagram) {
        case .failure(let error): return STUNAnswer(nil, error.outcome)
        case .success(let value): pending = value
        }
        guard let username = pending.username else {
            return Self.answer(pending, datagramSize: datagram.count, source: source, key: nil, outcome: .answered, socket: socket, rfc5780: rfc5780)
        }
        let digest = store.secretDigestNow(of: username)
        if let refused = Self.verify(datagram, digest: digest) { return STUNAnswer(nil, refused) }
        guard case .refreshed(let revision) = store.heartbeatNow(nodeID: username, secretDigest: digest!, observedAddress: observedIP ?? source.ipDescription, now: now) else {
            return STUNAnswer(nil, .unknownNode)
        }
        return Self.answer(pending, datagramSize: datagram.count, source: source, key: Array(digest!.utf8), registry: state(revision), outcome: .heartbeat, socket: socket)
    }
}

/// Which of the responder's sockets: the primary (`stun.listen`) or, with
/// `stun.alternate`, one that differs in IP, port or both (RFC 5780).
public struct STUNSocketRole: Sendable, Hashable, CustomStringConvertible {
    public var otherIP: Bool
    public var otherPort: Bool

    public static let primary = STUNSocketRole(otherIP: false, otherPort: false)
    public static let all = [primary, STUNSocketRole(otherIP: false, otherPort: true), STUNSocketRole(otherIP: true, otherPort: false), STUNSocketRole(otherIP: true, otherPort: true)]

    public init(otherIP: Bool, otherPort: Bool) {
        self.otherIP = otherIP
        self.otherPort = otherPort
    }

    /// The socket that differs from this one in both IP and port.
    public var opposite: STUNSocketRole { STUNSocketRole(otherIP: !otherIP, otherPort: !otherPort) }

    public var description: String { "\(otherIP ? "alternate" : "primary") IP, \(otherPort ? "alternate" : "primary") port" }
}

/// The primary and alternate addresses of an RFC 5780 responder.
public struct RFC5780Addresses: Sendable, Hashable {
    public var primary: STUNAddress
    public var alternate: STUNAddress

    public init(primary: STUNAddress, alternate: STUNAddress) {
        self.primary = primary
        self.alternate = alternate
    }

    /// The address of the socket in `role`.
    public func address(of role: STUNSocketRole) -> STUNAddress {
        STUNAddress(ip: role.otherIP ? alternate.ip : primary.ip, port: role.otherPort ? alternate.port : primary.port)
    }
}

/// What the responder does with one datagram: the answer (or none), why, and
/// where it goes — from which of its sockets, and to which port of the source
/// (RESPONSE-PORT; nil: the source's own).
public struct STUNAnswer: Sendable {
    public var reply: [UInt8]?
    public var outcome: STUNBindingResponder.Outcome
    public var from: STUNSocketRole
    public var toPort: UInt16?

    init(_ reply: [UInt8]?, _ outcome: STUNBindingResponder.Outcome, from: STUNSocketRole = .primary, toPort: UInt16? = nil) {
        self.reply = reply
        self.outcome = outcome
        self.from = from
        self.toPort = toPort
    }
}
