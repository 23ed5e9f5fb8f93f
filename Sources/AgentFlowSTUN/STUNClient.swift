public import AgentFlowCore
import NIOCore
import NIOPosix

/// Sends STUN binding requests over UDP and reads the mapped address: how a
/// node learns its public address, and (with credentials) how it heartbeats
/// to the signal server cheaply.
///
/// Requests are padded to at least the size of any answer, because AgentFlow's
/// responder never answers with more bytes than it received (no amplification).
/// Retransmits every `retransmitInterval` until `timeout` (RFC 8489 §6.2.1, simplified).
public struct STUNClient: Sendable {
    /// Short-term credentials: USERNAME = node id, key = the node's STUN password.
    public struct Credentials: Sendable {
        public var username: String
        public var password: String
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    public struct BindingResult: Sendable {
        /// The address the server saw the request come from.
        public var mappedAddress: STUNAddress
        /// True when the answer carried a valid MESSAGE-INTEGRITY for our credentials.
        public var authenticated: Bool
        /// The signal registry's state, from an authenticated AgentFlow answer (nil otherwise).
        public var registry: RegistryState?
        public var roundTrip: Duration
    }

    public var timeout: Duration
    public var retransmitInterval: Duration

    public init(timeout: Duration = .seconds(3), retransmitInterval: Duration = .milliseconds(500)) {
        self.timeout = timeout
        self.retransmitInterval = retransmitInterval
    }

    /// The smallest request AgentFlow's responder answers in full: its largest
    /// answer (header, XOR-MAPPED-ADDRESS for IPv6, AGENTFLOW-REGISTRY,
    /// MESSAGE-INTEGRITY, FINGERPRINT).
    static let minimumRequestBytes = 20 + 24 + 4 + RegistryState.encodedSize + 24 + 8

    /// Builds a padded binding request.
    public static func makeRequest(transactionID: [UInt8], credentials: Credentials?) throws -> [UInt8] {
        var message = STUNMessage(type: .bindingRequest, transactionID: transactionID)
        if let credentials { message.attributes.append(.init(type: STUNMessage.AttributeType.username, value: Array(credentials.username.utf8))) }
        let unpadded = try message.encode(integrityKey: credentials.map { Array($0.password.utf8) }, fingerprint: true)
        if unpadded.count < minimumRequestBytes {
            let paddingLength = max(0, minimumRequestBytes - unpadded.count - 4)
            message.attributes.append(.init(type: STUNMessage.AttributeType.padding, value: [UInt8](repeating: 0, count: (paddingLength + 3) & ~3)))
        }
        return try message.encode(integrityKey: credentials.map { Array($0.password.utf8) }, fingerprint: true)
    }

    /// Sends a binding request to `server` and waits for the answer.
    public func bind(to server: HostPort, credentials: Credentials? = nil) async throws -> BindingResult {
        let transactionID = (0..<12).map { _ in UInt8.random(in: 0...255) }
        let request = try Self.makeRequest(transactionID: transactionID, credentials: credentials)
        let remote = try SocketAddress.makeAddressResolvingHost(server.host, port: server.port)
        let localHost = remote.protocol == .inet6 ? "::" : "0.0.0.0"
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: localHost, port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let clock = ContinuousClock()
        let start = clock.now
        let timeout = self.timeout
        let retransmit = retransmitInterval
        return try await channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: BindingResult?.self) { group in
                group.addTask {
                    // Retransmit until answered or timed out.
                    while clock.now - start < timeout {
                        try await outbound.write(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: request)))
                        try await Task.sleep(for: retransmit)
                    }
                    return nil
                }
                group.addTask {
                    for try await envelope in inbound {
                        let bytes = Array(envelope.data.readableBytesView)
                        guard let answer = try? STUNMessage.parse(bytes), answer.transactionID == transactionID,
                              answer.type == STUNMessage.MessageType.bindingSuccess.rawValue,
                              let value = answer.attribute(STUNMessage.AttributeType.xorMappedAddress),
                              let mapped = STUNAddress.xorDecoded(value, transactionID: transactionID)
                        else { continue }
                        var authenticated = false
                        if let credentials {
                            authenticated = (try? STUNMessage.verifyIntegrity(of: bytes, key: Array(credentials.password.utf8))) == true
                        }
                        // Only a signed state is believed: a forged one could make a node poll too often or too rarely.
                        let registry = authenticated ? answer.registryState : nil
                        return BindingResult(mappedAddress: mapped, authenticated: authenticated, registry: registry, roundTrip: clock.now - start)
                    }
                    return nil
                }
                defer { group.cancelAll() }
                while let result = try await group.next() {
                    if let result { return result }
                    break  // the retransmit loop gave up
                }
                throw TransportError(.timedOut, "no STUN answer from \(server) within \(timeout)")
            }
        }
    }
}
