import AgentFlowCore
import AgentFlowSTUN
@testable import AgentFlowSignal
import Testing

/// RFC 5780's decision table, without a network: every branch of `NATBehavior.classify`.
@Suite("NAT classification")
struct NATClassificationTests {
    static let local = STUNAddress(ip: "192.168.1.10", port: 40000)!
    static let public1 = STUNAddress(ip: "203.0.113.7", port: 40000)!
    static let public2 = STUNAddress(ip: "203.0.113.7", port: 51111)!
    static let public3 = STUNAddress(ip: "203.0.113.7", port: 52222)!
    static let other = STUNAddress(ip: "198.51.100.2", port: 3479)!

    func observed(_ mapped: STUNAddress, _ second: STUNAddress?, _ third: STUNAddress?, both: Bool?, port: Bool?) -> NATObservations {
        var o = NATObservations(local: Self.local, mapped: mapped)
        o.otherAddress = Self.other
        o.mappedAtAlternateIP = second
        o.mappedAtAlternate = third
        o.answeredFromOtherAddress = both
        o.answeredFromOtherPort = port
        return o
    }

    @Test("port-restricted cone: endpoint-independent mapping, address-and-port-dependent filtering; needs a port forward")
    func portRestricted() {
        let behavior = NATBehavior.classify(observed(Self.public1, Self.public1, nil, both: false, port: false))
        #expect(behavior.behindNAT)
        #expect(behavior.mapping == .endpointIndependent)
        #expect(behavior.filtering == .addressAndPortDependent)
        #expect(behavior.verdict == .portForward)
    }

    @Test("symmetric NAT: a new port per destination; needs a relay (or a port forward)")
    func symmetric() {
        let behavior = NATBehavior.classify(observed(Self.public1, Self.public2, Self.public3, both: false, port: false))
        #expect(behavior.mapping == .addressAndPortDependent)
        #expect(behavior.verdict == .relay)
    }

    @Test("address-dependent mapping and filtering")
    func addressDependent() {
        let behavior = NATBehavior.classify(observed(Self.public1, Self.public2, Self.public2, both: false, port: true))
        #expect(behavior.mapping == .addressDependent)
        #expect(behavior.filtering == .addressDependent)
        #expect(behavior.verdict == .relay)
    }

    @Test("full cone: endpoint-independent filtering")
    func fullCone() {
        let behavior = NATBehavior.classify(observed(Self.public1, Self.public1, nil, both: true, port: nil))
        #expect(behavior.filtering == .endpointIndependent)
        #expect(behavior.verdict == .portForward)
    }

    @Test("no NAT and open: direct links work; no NAT behind a firewall: a port must be opened")
    func noNAT() {
        var open = observed(Self.local, nil, nil, both: true, port: nil)
        open.mapped = Self.local
        #expect(NATBehavior.classify(open).behindNAT == false)
        #expect(NATBehavior.classify(open).verdict == .direct)
        var firewalled = observed(Self.local, nil, nil, both: false, port: false)
        firewalled.mapped = Self.local
        #expect(NATBehavior.classify(firewalled).verdict == .portForward)
    }

    @Test("a server without OTHER-ADDRESS leaves mapping and filtering unknown, and says why")
    func noAlternate() {
        let behavior = NATBehavior.classify(NATObservations(local: Self.local, mapped: Self.public1))
        #expect(behavior.mapping == nil && behavior.filtering == nil)
        #expect(behavior.notes.contains { $0.contains("OTHER-ADDRESS") })
    }

    // MARK: The responder's RFC 5780 decisions

    static let rfc5780 = RFC5780Addresses(primary: STUNAddress(ip: "127.0.0.1", port: 3478)!, alternate: STUNAddress(ip: "127.0.0.2", port: 3479)!)
    static let source = STUNAddress(ip: "10.1.2.3", port: 5555)!

    func request(_ attributes: [STUNMessage.Attribute], padTo size: Int) throws -> (STUNMessage, Int) {
        var message = STUNMessage(type: .bindingRequest, transactionID: Array(repeating: 7, count: 12), attributes: attributes)
        let bare = try message.encode(fingerprint: false).count
        if size > bare { message.attributes.append(.init(type: STUNMessage.AttributeType.padding, value: [UInt8](repeating: 0, count: size - bare - 4))) }
        let bytes = try message.encode(fingerprint: false)
        return (try STUNMessage.parse(bytes), bytes.count)
    }

    @Test("CHANGE-REQUEST picks the socket the answer leaves from; OTHER-ADDRESS and RESPONSE-ORIGIN name the right ones")
    func changeRequest() throws {
        for (ip, port) in [(false, false), (true, false), (false, true), (true, true)] {
            let (message, size) = try request([STUNMessage.changeRequest(ip: ip, port: port)], padTo: 112)
            let answer = STUNBindingResponder.plainAnswer(message, datagramSize: size, source: Self.source, socket: .primary, rfc5780: Self.rfc5780)
            #expect(answer.from == STUNSocketRole(otherIP: ip, otherPort: port))
            let reply = try STUNMessage.parse(try #require(answer.reply))
            #expect(reply.attribute(STUNMessage.AttributeType.otherAddress).flatMap(STUNAddress.plainDecoded) == Self.rfc5780.alternate)
            #expect(reply.attribute(STUNMessage.AttributeType.responseOrigin).flatMap(STUNAddress.plainDecoded) == Self.rfc5780.address(of: answer.from))
            #expect(answer.reply!.count <= size)
        }
    }

    @Test("a request too small for the RFC 5780 attributes gets the bare answer, never more bytes than it sent beyond 32")
    func smallRequests() throws {
        let (bare, bareSize) = try request([], padTo: 20)
        let answer = STUNBindingResponder.plainAnswer(bare, datagramSize: bareSize, source: Self.source, socket: .primary, rfc5780: Self.rfc5780)
        let reply = try STUNMessage.parse(try #require(answer.reply))
        #expect(answer.reply!.count == 32)
        #expect(reply.attribute(STUNMessage.AttributeType.otherAddress) == nil)
        // A 28-byte change request still changes the socket, with the bare answer.
        let (change, changeSize) = try request([STUNMessage.changeRequest(ip: true, port: true)], padTo: 28)
        let changed = STUNBindingResponder.plainAnswer(change, datagramSize: changeSize, source: Self.source, socket: .primary, rfc5780: Self.rfc5780)
        #expect(changed.from == STUNSocketRole(otherIP: true, otherPort: true))
        #expect(changed.reply!.count <= 32)
    }

    @Test("RESPONSE-PORT sends the answer to that port of the source's IP")
    func responsePort() throws {
        let (message, size) = try request([.init(type: STUNMessage.AttributeType.responsePort, value: [0x30, 0x39, 0, 0])], padTo: 112)
        let answer = STUNBindingResponder.plainAnswer(message, datagramSize: size, source: Self.source, socket: .primary, rfc5780: Self.rfc5780)
        #expect(answer.toPort == 12345)
    }

    @Test("without an alternate, a CHANGE-REQUEST that asks for a change gets a 420 when it fits, nothing when not; a zero one is answered")
    func noAlternate420() throws {
        let (big, bigSize) = try request([STUNMessage.changeRequest(ip: true, port: false)], padTo: 64)
        let error = STUNBindingResponder.plainAnswer(big, datagramSize: bigSize, source: Self.source, socket: .primary, rfc5780: nil)
        let reply = try STUNMessage.parse(try #require(error.reply))
        #expect(reply.type == STUNMessage.MessageType.bindingError.rawValue)
        #expect(reply.attribute(STUNMessage.AttributeType.errorCode) == [0, 0, 4, 20])
        #expect(reply.attribute(STUNMessage.AttributeType.unknownAttributes) == [0x00, 0x03])
        let (small, smallSize) = try request([STUNMessage.changeRequest(ip: true, port: false)], padTo: 28)
        #expect(STUNBindingResponder.plainAnswer(small, datagramSize: smallSize, source: Self.source, socket: .primary, rfc5780: nil).reply == nil)
        let (zero, zeroSize) = try request([STUNMessage.changeRequest(ip: false, port: false)], padTo: 28)
        let plain = STUNBindingResponder.plainAnswer(zero, datagramSize: zeroSize, source: Self.source, socket: .primary, rfc5780: nil)
        #expect(try STUNMessage.parse(try #require(plain.reply)).type == STUNMessage.MessageType.bindingSuccess.rawValue)
    }

    @Test("malformed CHANGE-REQUEST or RESPONSE-PORT gets no answer")
    func malformed() throws {
        let (message, size) = try request([.init(type: STUNMessage.AttributeType.changeRequest, value: [0, 6])], padTo: 112)
        #expect(STUNBindingResponder.plainAnswer(message, datagramSize: size, source: Self.source, socket: .primary, rfc5780: Self.rfc5780).reply == nil)
    }
}
