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
    }

    public init(registry: SignalRegistry) {
        self.registry = registry
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
    static func answer(_ pending: Pending, datagramSize: Int, source: STUNAddress, key: [UInt8]?, registry: RegistryState? = nil, outcome: Outcome) -> (reply: [UInt8]?, outcome: Outcome) {
        let mapped = source.xorEncoded(transactionID: pending.request.transactionID)
        guard let key else {
            // Plain: XOR-MAPPED-ADDRESS always; FINGERPRINT only when it does not make the answer outgrow the request.
            let response = STUNMessage(type: .bindingSuccess, transactionID: pending.request.transactionID,
                                       attributes: [.init(type: STUNMessage.AttributeType.xorMappedAddress, value: mapped)])
            let withFingerprint = STUNMessage.headerLength + 4 + mapped.count + 8 <= datagramSize
            guard let reply = try? response.encode(fingerprint: withFingerprint) else { return (nil, .malformed) }
            return (reply, outcome)
        }
        let baseSize = STUNMessage.headerLength + 4 + mapped.count + 24 + 8
        var attributes: [STUNMessage.Attribute] = [.init(type: STUNMessage.AttributeType.xorMappedAddress, value: mapped)]
        if let registry, baseSize + 4 + RegistryState.encodedSize <= datagramSize {
            attributes.append(registry.attribute)
        }
        let response = STUNMessage(type: .bindingSuccess, transactionID: pending.request.transactionID, attributes: attributes)
        guard let reply = try? response.encode(integrityKey: key, fingerprint: true), reply.count <= datagramSize else { return (nil, .tooSmall) }
        return (reply, outcome)
    }

    struct OutcomeError: Error { let outcome: Outcome }

    func state(_ revision: UInt64) -> RegistryState {
        RegistryState(revision: revision, minPollIntervalSeconds: UInt32(clamping: registry.minPollIntervalSeconds))
    }

    /// Answers one datagram through any store (awaiting its lookups).
    public func respond(to datagram: [UInt8], from source: STUNAddress, observedIP: String? = nil, now: Date = Date()) async -> (reply: [UInt8]?, outcome: Outcome) {
        let pending: Pending
        switch Self.prepare(datagram) {
        case .failure(let error): return (nil, error.outcome)
        case .success(let value): pending = value
        }
        guard let username = pending.username else { return Self.answer(pending, datagramSize: datagram.count, source: source, key: nil, outcome: .answered) }
        let digest = try? await registry.store.secretDigest(of: username)
        if let refused = Self.verify(datagram, digest: digest) { return (nil, refused) }
        guard case .refreshed(let revision)? = try? await registry.store.heartbeat(nodeID: username, secretDigest: digest!, observedAddress: observedIP ?? source.ipDescription, now: now) else {
            return (nil, .unknownNode)
        }
        return Self.answer(pending, datagramSize: datagram.count, source: source, key: Array(digest!.utf8), registry: state(revision), outcome: .heartbeat)
    }

    /// Answers one datagram without suspending, for stores that can be read
    /// and written synchronously (memory): runs on the UDP event loop itself.
    func respondNow(to datagram: [UInt8], from source: STUNAddress, observedIP: String? = nil, store: any SynchronousHeartbeatStore, now: Date = Date()) -> (reply: [UInt8]?, outcome: Outcome) {
        let pending: Pending
        switch Self.prepare(datagram) {
        case .failure(let error): return (nil, error.outcome)
        case .success(let value): pending = value
        }
        guard let username = pending.username else { return Self.answer(pending, datagramSize: datagram.count, source: source, key: nil, outcome: .answered) }
        let digest = store.secretDigestNow(of: username)
        if let refused = Self.verify(datagram, digest: digest) { return (nil, refused) }
        guard case .refreshed(let revision) = store.heartbeatNow(nodeID: username, secretDigest: digest!, observedAddress: observedIP ?? source.ipDescription, now: now) else {
            return (nil, .unknownNode)
        }
        return Self.answer(pending, datagramSize: datagram.count, source: source, key: Array(digest!.utf8), registry: state(revision), outcome: .heartbeat)
    }
}
