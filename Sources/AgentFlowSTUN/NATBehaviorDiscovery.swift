public import AgentFlowCore
import NIOCore

/// Runs the RFC 5780 tests against one STUN server and classifies the NAT.
///
/// - Mapping (§4.3): one socket asks the primary address (test I), then the
///   alternate IP at the primary port (II), then the alternate IP and port
///   (III), and compares the mapped addresses.
/// - Filtering (§4.4): a fresh socket, which has sent only to the primary
///   address, asks for answers from the alternate IP and port (II), then from
///   the alternate port only (III).
/// - Hairpinning (§4.5): the mapping socket sends a request to its own mapped
///   address and waits for it to come back.
///
/// Requests are padded so the server has room for OTHER-ADDRESS and
/// RESPONSE-ORIGIN: AgentFlow's responder never answers with more bytes than
/// it received.
public struct NATBehaviorDiscovery: Sendable {
    /// How long one test waits for its answer (retransmitting meanwhile).
    /// An unanswered filtering test costs this much.
    public var answerTimeout: Duration

    public init(answerTimeout: Duration = .seconds(1)) {
        self.answerTimeout = answerTimeout
    }

    /// What one run found.
    public struct Result: Sendable {
        public var server: HostPort
        public var observations: NATObservations
        public var behavior: NATBehavior
        /// Test I's round trip.
        public var roundTrip: Duration
        /// RESPONSE-ORIGIN of test I, when given.
        public var responseOrigin: STUNAddress?
    }

    /// Padded to hold our responder's largest plain answer (IPv6 with both RFC 5780 addresses and FINGERPRINT).
    static let requestBytes = 112

    static func request(_ attributes: [STUNMessage.Attribute] = []) throws -> (bytes: [UInt8], id: [UInt8]) {
        let id = (0..<12).map { _ in UInt8.random(in: 0...255) }
        var message = STUNMessage(type: .bindingRequest, transactionID: id, attributes: attributes)
        let unpadded = try message.encode(fingerprint: true).count
        if unpadded < requestBytes {
            message.attributes.append(.init(type: STUNMessage.AttributeType.padding, value: [UInt8](repeating: 0, count: (requestBytes - unpadded - 4 + 3) & ~3)))
        }
        return (try message.encode(fingerprint: true), id)
    }

    /// Test I only: the mapped address and the round trip (`nil` when the server did not answer).
    public func bind(_ server: HostPort) async throws -> (mapped: STUNAddress, roundTrip: Duration, answer: STUNSocket.Answer)? {
        let remote = try SocketAddress.makeAddressResolvingHost(server.host, port: server.port)
        let socket = try await STUNSocket.bind(host: remote.protocol == .inet6 ? "::" : "0.0.0.0")
        defer { Task { await socket.close() } }
        return try await testI(socket, remote)
    }

    private func testI(_ socket: STUNSocket, _ remote: SocketAddress) async throws -> (mapped: STUNAddress, roundTrip: Duration, answer: STUNSocket.Answer)? {
        let request = try Self.request()
        guard let answer = try await socket.transact(request.bytes, transactionID: request.id, to: remote, timeout: answerTimeout),
              let mapped = Self.mapped(answer)
        else { return nil }
        return (mapped, answer.roundTrip, answer)
    }

    static func mapped(_ answer: STUNSocket.Answer) -> STUNAddress? {
        guard answer.message.type == STUNMessage.MessageType.bindingSuccess.rawValue else { return nil }
        if let value = answer.message.attribute(STUNMessage.AttributeType.xorMappedAddress) {
            return STUNAddress.xorDecoded(value, transactionID: answer.message.transactionID)
        }
        return answer.message.attribute(STUNMessage.AttributeType.mappedAddress).flatMap(STUNAddress.plainDecoded)
    }

    /// Every test; `hairpinning` adds the hairpin test. Throws only when the
    /// server cannot be resolved; an unanswered test I is `nil`.
    public func discover(_ server: HostPort, hairpinning: Bool = true) async throws -> Result? {
        let remote = try SocketAddress.makeAddressResolvingHost(server.host, port: server.port)
        let localIP = try await STUNSocket.localIP(toward: remote)
        let mappingSocket = try await STUNSocket.bind(host: localIP)
        defer { Task { await mappingSocket.close() } }
        guard let local = STUNAddress(mappingSocket.localAddress),
              let first = try await testI(mappingSocket, remote)
        else { return nil }
        var observations = NATObservations(local: local, mapped: first.mapped)
        let origin = first.answer.message.attribute(STUNMessage.AttributeType.responseOrigin).flatMap(STUNAddress.plainDecoded)
        observations.otherAddress = first.answer.message.attribute(STUNMessage.AttributeType.otherAddress).flatMap(STUNAddress.plainDecoded)
        if let other = observations.otherAddress {
            // Mapping.
            if first.mapped != local {
                let alternateIP = try STUNAddress(ip: other.ip, port: UInt16(server.port)).socketAddress
                let request = try Self.request()
                if let answer = try await mappingSocket.transact(request.bytes, transactionID: request.id, to: alternateIP, timeout: answerTimeout) {
                    observations.mappedAtAlternateIP = Self.mapped(answer)
                }
                if let second = observations.mappedAtAlternateIP, second != first.mapped {
                    let request = try Self.request()
                    if let answer = try await mappingSocket.transact(request.bytes, transactionID: request.id, to: other.socketAddress, timeout: answerTimeout) {
                        observations.mappedAtAlternate = Self.mapped(answer)
                    }
                }
            }
            // Filtering, from a socket that has talked only to the primary address.
            let filteringSocket = try await STUNSocket.bind(host: localIP)
            defer { Task { await filteringSocket.close() } }
            if try await testI(filteringSocket, remote) != nil {
                let both = try Self.request([STUNMessage.changeRequest(ip: true, port: true)])
                let answeredBoth = try await filteringSocket.transact(both.bytes, transactionID: both.id, to: remote, timeout: answerTimeout)
                observations.answeredFromOtherAddress = answeredBoth.map { Self.mapped($0) != nil } ?? false
                if observations.answeredFromOtherAddress == false {
                    let port = try Self.request([STUNMessage.changeRequest(ip: false, port: true)])
                    let answeredPort = try await filteringSocket.transact(port.bytes, transactionID: port.id, to: remote, timeout: answerTimeout)
                    observations.answeredFromOtherPort = answeredPort.map { Self.mapped($0) != nil } ?? false
                }
            }
        }
        if hairpinning, first.mapped != local {
            let request = try Self.request()
            let came = try await mappingSocket.transact(request.bytes, transactionID: request.id, to: first.mapped.socketAddress, timeout: answerTimeout)
            observations.hairpinned = came != nil
        }
        return Result(server: server, observations: observations, behavior: .classify(observations), roundTrip: first.roundTrip, responseOrigin: origin)
    }

    /// How long the NAT keeps an idle UDP mapping (RFC 5780 §4.6), measured up
    /// to `longest`: one socket per check is mapped at the start and left idle;
    /// at each check time a second socket asks the server (RESPONSE-PORT) to
    /// answer to the first one's mapped port, which arrives only while that
    /// mapping lives. Checks run at 1 s, 2 s, 4 s, … and at `longest`; the
    /// whole measurement takes `longest` plus a second or two.
    public struct Lifetime: Sendable, Hashable {
        /// The longest idle time a mapping was seen alive after.
        public var aliveAfter: Duration?
        /// The shortest idle time a mapping was seen gone after (nil: alive at every check).
        public var goneAfter: Duration?
        /// Why it was not measured.
        public var problem: String?

        public init(aliveAfter: Duration? = nil, goneAfter: Duration? = nil, problem: String? = nil) {
            self.aliveAfter = aliveAfter
            self.goneAfter = goneAfter
            self.problem = problem
        }

        /// `≥ 2 s, < 4 s`, `≥ 60 s`, or the problem.
        public var text: String {
            if let problem { return "not measured: \(problem)" }
            let alive = aliveAfter.map { "≥ \(Int($0.components.seconds)) s" } ?? "< 1 s"
            return goneAfter.map { "\(alive), < \(Int($0.components.seconds)) s" } ?? "\(alive) (alive at every check)"
        }
    }

    public func mappingLifetime(_ server: HostPort, longest: Duration) async throws -> Lifetime {
        let remote = try SocketAddress.makeAddressResolvingHost(server.host, port: server.port)
        let localIP = try await STUNSocket.localIP(toward: remote)
        var checks: [Duration] = [.zero]
        var next = Duration.seconds(1)
        while next < longest {
            checks.append(next)
            next *= 2
        }
        checks.append(longest)
        // Map every socket now.
        var mapped: [(STUNSocket, STUNAddress)] = []
        defer { for (socket, _) in mapped { Task { await socket.close() } } }
        for _ in checks {
            let socket = try await STUNSocket.bind(host: localIP)
            guard let first = try await testI(socket, remote) else {
                await socket.close()
                return Lifetime(problem: "the STUN server stopped answering")
            }
            mapped.append((socket, first.mapped))
        }
        let asker = try await STUNSocket.bind(host: localIP)
        defer { Task { await asker.close() } }
        let start = ContinuousClock.now
        let answerTimeout = self.answerTimeout
        let outcomes = try await withThrowingTaskGroup(of: (Int, Bool?).self) { group in
            for (index, check) in checks.enumerated() {
                let (socket, mapping) = mapped[index]
                group.addTask {
                    try await Task.sleep(until: start + check, clock: .continuous)
                    let request = try Self.request([.init(type: STUNMessage.AttributeType.responsePort, value: [UInt8(mapping.port >> 8), UInt8(mapping.port & 0xFF), 0, 0])])
                    async let arrived = socket.expect(transactionID: request.id, timeout: answerTimeout)
                    async let refused = asker.expect(transactionID: request.id, timeout: answerTimeout)
                    for delay in [0, 250, 500] {  // a lost datagram is not a dead mapping
                        try await Task.sleep(for: .milliseconds(delay))
                        asker.send(request.bytes, to: remote)
                    }
                    let came = try await arrived
                    // An answer to the asker itself: the server does not honour RESPONSE-PORT.
                    if let error = try await refused, error.message.type == STUNMessage.MessageType.bindingError.rawValue { return (index, nil) }
                    return (index, came != nil)
                }
            }
            var results: [Int: Bool?] = [:]
            for try await (index, alive) in group { results[index] = alive }
            return results
        }
        if outcomes[0] == .some(nil) { return Lifetime(problem: "the STUN server does not support RESPONSE-PORT (RFC 5780; set stun.alternate)") }
        guard outcomes[0] == .some(true) else { return Lifetime(problem: "the answer to a fresh mapping did not arrive (RESPONSE-PORT answers blocked)") }
        var lifetime = Lifetime()
        for (index, check) in checks.enumerated() {
            if outcomes[index] == .some(true), lifetime.goneAfter == nil {
                lifetime.aliveAfter = check
            } else if outcomes[index] == .some(false), lifetime.goneAfter == nil {
                lifetime.goneAfter = check
            }
        }
        return lifetime
    }
}
