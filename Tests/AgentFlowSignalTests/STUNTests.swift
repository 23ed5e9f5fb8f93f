import AgentFlowCore
import AgentFlowSTUN
import AgentFlowSignal
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite("STUN codec (RFC 8489)")
struct STUNCodecTests {
    let transactionID: [UInt8] = Array(0..<12)

    @Test("XOR-MAPPED-ADDRESS round-trips for IPv4 and IPv6")
    func xorAddress() throws {
        for text in ["192.0.2.1", "::1", "2001:db8::7"] {
            let address = try #require(STUNAddress(ip: text, port: 40_123))
            let decoded = STUNAddress.xorDecoded(address.xorEncoded(transactionID: transactionID), transactionID: transactionID)
            #expect(decoded == address)
            #expect(decoded?.ipDescription == text)
        }
    }

    @Test("encode, parse, integrity and fingerprint agree; tampering is detected")
    func integrity() throws {
        let key = Array("node-password".utf8)
        let request = try STUNClient.makeRequest(transactionID: transactionID, credentials: .init(username: "master-a", password: "node-password"))
        let parsed = try STUNMessage.parse(request)
        #expect(parsed.username == "master-a")
        #expect(try STUNMessage.verifyIntegrity(of: request, key: key))
        #expect(!(try STUNMessage.verifyIntegrity(of: request, key: Array("other".utf8))))
        var tampered = request
        tampered[26] ^= 0x01  // inside USERNAME
        #expect(throws: STUNError.self) { _ = try STUNMessage.parse(tampered) }  // FINGERPRINT catches it first
    }

    @Test("a known RFC 5769 sample request parses and its fingerprint checks")
    func rfc5769() throws {
        // RFC 5769 §2.1 sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT).
        let hex = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf"
        let bytes = stride(from: 0, to: hex.count, by: 2).map { UInt8(hex.dropFirst($0).prefix(2), radix: 16)! }
        let message = try STUNMessage.parse(bytes)
        #expect(message.username == "evtj:h6vY")
        #expect(try STUNMessage.verifyIntegrity(of: bytes, key: Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)))
    }

    @Test("garbage is refused with a reason, never a crash", arguments: [
        [UInt8](), [0x00, 0x01], [UInt8](repeating: 0xFF, count: 20), [UInt8](repeating: 0, count: 20),
        [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42] + [UInt8](repeating: 0, count: 12) + [0x00, 0x06, 0x00, 0xFF, 0, 0, 0, 0],
        [0x00, 0x01, 0x00, 0x03, 0x21, 0x12, 0xA4, 0x42] + [UInt8](repeating: 0, count: 15),
    ])
    func garbage(bytes: [UInt8]) {
        #expect(throws: STUNError.self) { _ = try STUNMessage.parse(bytes) }
    }

    @Test("random bytes never crash the parser")
    func fuzz() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...96, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if bytes.count >= 8 && Bool.random() { bytes.replaceSubrange(4..<8, with: [0x21, 0x12, 0xA4, 0x42]); bytes[0] &= 0x3F }
            _ = try? STUNMessage.parse(bytes)
        }
    }
}

@Suite("Signal server STUN responder", .timeLimit(.minutes(1)))
struct STUNServerTests {
    @Test("unauthenticated requests learn their mapped address")
    func mappedAddress() async throws {
        let server = try await RunningSignalServer.start()
        let stun = try #require(server.stun)
        let result = try await STUNClient(timeout: .seconds(2)).bind(to: stun)
        #expect(result.mappedAddress.ipDescription == "127.0.0.1")
        #expect(result.mappedAddress.port > 0)
        #expect(!result.authenticated)
        await server.stop()
    }

    @Test("authenticated binding requests are heartbeats; bad credentials get no answer", arguments: StoreKind.allCases)
    func heartbeats(store: StoreKind) async throws {
        try await withServer(store, "registry:\n  ttl: 1s\n  sweep_interval: 100ms\n") { server in
        let stun = try #require(server.stun)
        let secret = try await server.register("udp-node")
        let password = try SignalRegistry.digest(secret)
        let client = STUNClient(timeout: .seconds(1))
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(1_800) {
            let result = try await client.bind(to: stun, credentials: .init(username: "udp-node", password: password))
            #expect(result.authenticated)
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(try await server.listedIDs() == ["udp-node"], "STUN heartbeats kept the node past its TTL")
        await #expect(throws: TransportError.self) {
            _ = try await STUNClient(timeout: .milliseconds(600)).bind(to: stun, credentials: .init(username: "udp-node", password: "wrong"))
        }
        await #expect(throws: TransportError.self) {
            _ = try await STUNClient(timeout: .milliseconds(600)).bind(to: stun, credentials: .init(username: "nobody", password: password))
        }
        let metrics = try await server.call("GET", "/metrics").body
        #expect(metrics.contains(#"agentflow_signal_stun_packets_total{result="heartbeat"}"#) && !metrics.contains(#"{result="heartbeat"} 0"#))
        #expect(metrics.contains(#"agentflow_signal_stun_packets_total{result="bad_credentials"}"#) && !metrics.contains(#"{result="bad_credentials"} 0"#))
        #expect(metrics.contains(#"{result="unknown_node"}"#) && !metrics.contains(#"{result="unknown_node"} 0"#))
        }
    }

    @Test("a heartbeat's answer carries the registry revision, signed; a request too small for it still gets the rest", arguments: StoreKind.allCases)
    func revision(store: StoreKind) async throws {
        try await withServer(store, "registry:\n  list_polls_per_second: 1\n") { server in
        let stun = try #require(server.stun)
        let password = try SignalRegistry.digest(try await server.register("rev-node"))
        let credentials = STUNClient.Credentials(username: "rev-node", password: password)
        func listed() async throws -> UInt64 { try #require((try await server.call("GET", "/list").json["revision"] as? NSNumber)?.uint64Value) }

        let first = try #require(try await STUNClient(timeout: .seconds(2)).bind(to: stun, credentials: credentials).registry)
        #expect(first.revision == (try await listed()))
        _ = try await server.register("another")
        let second = try #require(try await STUNClient(timeout: .seconds(2)).bind(to: stun, credentials: credentials).registry)
        #expect(second.revision == (try await listed()) && second.revision > first.revision)
        // A revision far from 0: a restarted server's revisions never meet a node's old ones.
        #expect(first.revision > 1_000_000_000_000)
        // Two nodes, one list poll a second for the fleet: each may fetch every 2 s.
        #expect(second.minPollIntervalSeconds == 2)
        // Unsigned, the same answer carries no registry state.
        #expect(try await STUNClient(timeout: .seconds(2)).bind(to: stun).registry == nil)

        // A request big enough for the plain answer (64 bytes over IPv4) but not for the registry state (80).
        let transactionID = (0..<12).map { _ in UInt8.random(in: 0...255) }
        var request = STUNMessage(type: .bindingRequest, transactionID: transactionID, attributes: [.init(type: STUNMessage.AttributeType.username, value: Array("rev-node".utf8))])
        let unpadded = try request.encode(integrityKey: Array(password.utf8))
        request.attributes.append(.init(type: STUNMessage.AttributeType.padding, value: [UInt8](repeating: 0, count: 72 - unpadded.count - 4)))
        let small = try request.encode(integrityKey: Array(password.utf8))
        #expect(small.count == 72)
        let answer = try STUNMessage.parse(try #require(try await sendRaw([small], to: stun).first))
        #expect(answer.attribute(STUNMessage.AttributeType.xorMappedAddress) != nil)
        #expect(answer.registryState == nil)
        }
    }

    @Test("a bare 20-byte request gets the minimal 32-byte answer; garbage gets none; the responder keeps working")
    func minimalAnswer() async throws {
        let server = try await RunningSignalServer.start()
        let stun = try #require(server.stun)
        // What turnutils_stunclient and WebRTC stacks send: a binding request with no attributes.
        var bare = STUNMessage(type: .bindingRequest, transactionID: Array(repeating: 7, count: 12))
        bare.attributes = []
        let small = try bare.encode(fingerprint: false)
        #expect(small.count == 20)
        let replies = try await sendRaw([small, Array("hello".utf8), [UInt8](repeating: 0xAB, count: 600)], to: stun)
        #expect(replies.count == 1)
        let reply = try #require(replies.first)
        // Header + XOR-MAPPED-ADDRESS (IPv4) and nothing else: 1.6 times the request, the least any STUN answer can be.
        #expect(reply.count == 32)
        let answer = try STUNMessage.parse(reply)
        #expect(answer.transactionID == Array(repeating: 7, count: 12))
        #expect(answer.attributes.map(\.type) == [STUNMessage.AttributeType.xorMappedAddress])
        #expect(answer.attribute(STUNMessage.AttributeType.fingerprint) == nil)
        #expect(try await STUNClient(timeout: .seconds(2)).bind(to: stun).mappedAddress.ipDescription == "127.0.0.1")
        let metrics = try await server.call("GET", "/metrics").body
        #expect(metrics.contains(#"agentflow_signal_stun_packets_total{result="answered"} 2"#), "\(metrics)")
        #expect(metrics.contains(#"agentflow_signal_stun_packets_total{result="malformed"} 2"#))
        await server.stop()
    }

    @Test("coturn's turnutils_stunclient gets its mapped address from our responder")
    func turnutilsInterop() async throws {
        let server = try await RunningSignalServer.start()
        let stun = try #require(server.stun)
        let tool = "/usr/bin/turnutils_stunclient"
        try #require(FileManager.default.isExecutableFile(atPath: tool), "install coturn (scripts/install-deps does)")
        let output = try await Task.detached {
            let process = Process()
            process.executableURL = URL(filePath: tool)
            process.arguments = ["-p", String(stun.port), "127.0.0.1"]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }.value
        // It prints the mapped address it was told: "UDP reflexive addr: 127.0.0.1:PORT".
        #expect(output.contains("UDP reflexive addr: 127.0.0.1:"), "\(output)")
        await server.stop()
    }

    final class Received: Sendable {
        let datagrams = Mutex<[[UInt8]]>([])
    }

    /// Sends datagrams and collects whatever comes back within 300 ms.
    func sendRaw(_ datagrams: [[UInt8]], to server: HostPort) async throws -> [[UInt8]] {
        let remote = try SocketAddress(ipAddress: server.host, port: server.port)
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            for datagram in datagrams { try await outbound.write(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: datagram))) }
            let received = Received()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await envelope in inbound { received.datagrams.withLock { $0.append(Array(envelope.data.readableBytesView)) } }
                }
                try await Task.sleep(for: .milliseconds(300))
                group.cancelAll()
            }
            return received.datagrams.withLock { $0 }
        }
    }
}
