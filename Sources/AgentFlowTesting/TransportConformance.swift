public import AgentFlowCore
public import AgentFlowProto
import Foundation
import SwiftProtobuf
import Synchronization

/// The contract every transport keeps, as checks any test framework can run.
///
/// Each check builds its own transports from a ``TransportTestSubject``, runs
/// real links between them, and throws a ``ConformanceFailure`` naming the
/// broken promise. AgentFlow's `grpc`, `tcp` and `memory` transports run
/// exactly these; so should yours:
///
/// ```swift
/// @Test(arguments: TransportConformance.checks)
/// func conformance(_ check: TransportConformance.Check) async throws { try await check.run(MySubject()) }
/// ```
public enum TransportConformance {
    /// One named promise of the transport contract; each run gets fresh certificates.
    public typealias Check = ConformanceCheck<any TransportTestSubject>

    /// Every check, in a stable order.
    public static let checks: [Check] = [
        check("links connect both ways, with proven identities", connectBothWays),
        check("streams both ways at once, in order, many and large messages (mTLS)") { try await orderedStreaming($1, plaintext: false) },
        check("streams both ways at once, in order, many and large messages (plaintext)") { subject, fixture in
            guard subject.supportsPlaintext else { return }
            try await orderedStreaming(fixture, plaintext: true)
        },
        check("a slow reader makes the writer wait: memory stays bounded", backpressure),
        check("a peer's clean close ends the other side's inbound", peerClose),
        check("a crashed peer's links end promptly with an error", peerCrash),
        check("shutdown while busy ends every link and the listener promptly", shutdownWhileBusy),
        check("an oversize message is refused, and the link stays usable", oversizeRefused),
        check("a dial where nothing listens fails cleanly", connectRefused),
        check("a dial that expects another node is refused", wrongPeerRefused),
    ]

    /// A check whose body gets a `TransportFixture`: fresh certificates and listeners for this run.
    static func check(_ name: String, _ body: @escaping @Sendable (any TransportTestSubject, TransportFixture) async throws -> Void) -> Check {
        Check(name: name) { subject, scope in try await body(subject, TransportFixture(subject: subject, scope: scope)) }
    }

    /// A numbered envelope (a task log line) carrying `padding` bytes.
    public static func numbered(_ number: UInt64, padding: Int = 0) -> Envelope {
        var envelope = Envelope()
        envelope.taskLog = .with {
            $0.header.sequence = number
            $0.task = "t"
            if padding > 0 { $0.line = Data(repeating: UInt8(ascii: "x"), count: padding) }
        }
        return envelope
    }

    // MARK: The checks

    static func connectBothWays(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        let a = try await fixture.listener("node-a")
        let b = try await fixture.listener("node-b")
        defer { a.stop(); b.stop() }
        let ab = try await a.transport.connect(to: b.address, expectedPeer: NodeID("node-b"))
        let ba = try await b.transport.connect(to: a.address, expectedPeer: NodeID("node-a"))
        let atB = try await b.next(scope)
        let atA = try await a.next(scope)
        if subject.authenticatesPeers {
            try scope.require(ab.peer.certifiedNodeID == NodeID("node-b"), "the dialler should see node-b proven, saw \(ab.peer)")
            try scope.require(atB.peer.certifiedNodeID == NodeID("node-a"), "the listener should see node-a proven, saw \(atB.peer)")
            try scope.require(atA.peer.certifiedNodeID == NodeID("node-b"), "node-a's listener should see node-b proven, saw \(atA.peer)")
        }
        try scope.require(atB.peer.transport == subject.name, "links should report transport '\(subject.name)', reported '\(atB.peer.transport)'")
        try scope.require(ab.peer.transport == subject.name, "links should report transport '\(subject.name)', reported '\(ab.peer.transport)'")
        for (number, writer, reader) in [(1, ab, atB), (2, atB, ab), (3, ba, atA), (4, atA, ba)] as [(UInt64, MeshStream, MeshStream)] {
            try await writer.outbound.write(numbered(number))
            let received = try await scope.within(.seconds(10), "message \(number) arriving") {
                var inbound = reader.inbound.makeAsyncIterator()
                return try await inbound.next()
            }
            try scope.require(received?.taskLog.header.sequence == number, "expected message \(number), got \(String(describing: received))")
        }
    }

    static func orderedStreaming(_ fixture: TransportFixture, plaintext: Bool) async throws {
        let scope = fixture.scope
        let (server, client, link, accepted) = try await fixture.linkPair(plaintext: plaintext)
        defer { client.beginGracefulShutdown(); server.stop() }
        // 20,000 small messages each way, with a 1 MiB and a 3 MiB one in the middle.
        let count: UInt64 = 20_000
        @Sendable func size(_ n: UInt64) -> Int { n == 5_000 ? 1 << 20 : n == 12_345 ? 3 << 20 : Int(n % 300) }
        try await scope.within(.seconds(60), "streaming 20,000 messages each way") {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for side in [link, accepted] {
                    group.addTask {
                        for n in 1...count { try await side.outbound.write(numbered(n, padding: size(n))) }
                        await side.outbound.finish()
                    }
                    group.addTask {
                        var expected: UInt64 = 1
                        for try await envelope in side.inbound {
                            try scope.require(envelope.taskLog.header.sequence == expected,
                                              "message \(envelope.taskLog.header.sequence) arrived where \(expected) was due")
                            try scope.require(envelope.taskLog.line.count == size(expected),
                                              "message \(expected) arrived with \(envelope.taskLog.line.count) bytes, sent \(size(expected))")
                            expected += 1
                        }
                        try scope.require(expected == count + 1, "the stream ended after \(expected - 1) of \(count) messages")
                    }
                }
                // The first failure ends the check at once; the others are cancelled.
                for try await _ in group {}
            }
        }
    }

    static func backpressure(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        // A 64 KiB message limit keeps HTTP/2 windows at their 1 MiB floor.
        let (server, client, link, accepted) = try await fixture.linkPair(limits: TransportTestLimits(maxMessageBytes: 64 * 1024))
        defer { client.beginGracefulShutdown(); server.stop() }
        let written = Atomic<Int>(0)
        // 8 KiB messages: 32 MiB if nothing pushed back.
        let writer = Task {
            for n in 1...4_096 {
                try await link.outbound.write(numbered(UInt64(n), padding: 8_192))
                written.add(1, ordering: .relaxed)
            }
        }
        defer { writer.cancel() }
        try await Task.sleep(for: .milliseconds(700))
        let stalledAt = written.load(ordering: .relaxed)
        // Socket buffers, windows and queues together may hold a few MiB, not 12.
        try scope.require(stalledAt < 1_536, "the writer should stall while nobody reads; \(stalledAt) messages of 8 KiB went out")
        try await Task.sleep(for: .milliseconds(300))
        let more = written.load(ordering: .relaxed) - stalledAt
        try scope.require(more < 64, "the writer kept going without a reader (\(more) more messages in 300 ms)")
        try await scope.within(.seconds(30), "reading all 4,096 messages once the reader starts") {
            var expected: UInt64 = 1
            for try await envelope in accepted.inbound {
                try scope.require(envelope.taskLog.header.sequence == expected, "message \(envelope.taskLog.header.sequence) arrived where \(expected) was due")
                expected += 1
                if expected > 4_096 { break }
            }
            try await writer.value
        }
    }

    static func peerClose(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        let (server, client, link, accepted) = try await fixture.linkPair()
        defer { client.beginGracefulShutdown(); server.stop() }
        try await link.outbound.write(numbered(7))
        await link.outbound.finish()
        try await scope.within(.seconds(10), "the message and then the end of the stream") {
            var inbound = accepted.inbound.makeAsyncIterator()
            let first = try await inbound.next()
            try scope.require(first?.taskLog.header.sequence == 7, "expected message 7, got \(String(describing: first))")
            let end = try await inbound.next()
            try scope.require(end == nil, "the inbound should end after the peer finished its half, got \(String(describing: end))")
        }
        // The other half still works until its side finishes it.
        try await accepted.outbound.write(numbered(8))
        await accepted.outbound.finish()
        try await scope.within(.seconds(10), "the reply and then the end of the stream") {
            var inbound = link.inbound.makeAsyncIterator()
            let first = try await inbound.next()
            try scope.require(first?.taskLog.header.sequence == 8, "the half-closed link should still carry the reply; got \(String(describing: first))")
            let end = try await inbound.next()
            try scope.require(end == nil, "the inbound should end after the peer finished its half")
        }
    }

    static func peerCrash(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        let (server, client, link, accepted) = try await fixture.linkPair()
        defer { client.beginGracefulShutdown(); server.stop() }
        try await link.outbound.write(numbered(1))
        let started = ContinuousClock.now
        subject.crash(client)
        try await scope.within(.seconds(3), "the crashed link ending") {
            var inbound = accepted.inbound.makeAsyncIterator()
            let first = try await inbound.next()
            try scope.require(first?.taskLog.header.sequence == 1, "message 1 was sent before the crash; got \(String(describing: first))")
            do {
                let next = try await inbound.next()
                throw scope.fail("after a crash the inbound should throw, not \(next == nil ? "end cleanly" : "deliver more")")
            } catch is ConformanceFailure {
                throw scope.fail("after a crash the inbound should throw, not end cleanly")
            } catch {}
        }
        try scope.require(ContinuousClock.now - started < .seconds(2), "the crash took \(ContinuousClock.now - started) to notice")
        do {
            for n in 1...1_000 { try await accepted.outbound.write(numbered(UInt64(n), padding: 1_000)) }
            throw scope.fail("writes to a crashed peer should fail")
        } catch is ConformanceFailure {
            throw scope.fail("writes to a crashed peer should fail")
        } catch {}
    }

    static func shutdownWhileBusy(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        let (server, client, link, accepted) = try await fixture.linkPair()
        defer { client.beginGracefulShutdown() }
        let writer = Task {
            var n: UInt64 = 0
            while n < 1_000_000 {
                n += 1
                try await link.outbound.write(numbered(n, padding: 100))
            }
        }
        let reader = Task { for try await _ in accepted.inbound {} }
        defer { writer.cancel(); reader.cancel() }
        try await Task.sleep(for: .milliseconds(200))
        server.transport.beginGracefulShutdown()
        try scope.require(await scope.finishes(within: .seconds(5)) { _ = await reader.result }, "the server's inbound should end within 5 s of its shutdown")
        try scope.require(await scope.finishes(within: .seconds(5)) { _ = await writer.result }, "the client's writer should see the link end within 5 s")
        try scope.require(await scope.finishes(within: .seconds(5)) { _ = try? await server.task.value }, "listen should return within 5 s of beginGracefulShutdown")
        if case .success = await writer.result { throw scope.fail("the writer should have seen the link end, but wrote a million messages") }
    }

    static func oversizeRefused(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        let (server, client, link, accepted) = try await fixture.linkPair(limits: TransportTestLimits(maxMessageBytes: 64 * 1024))
        defer { client.beginGracefulShutdown(); server.stop() }
        do {
            try await link.outbound.write(numbered(1, padding: 70_000))
            throw scope.fail("a 70,000-byte message over a 64 KiB limit should be refused")
        } catch let error as TransportError {
            try scope.require(error.kind == .messageTooLarge, "expected TransportError(.messageTooLarge), got \(error)")
        }
        try await link.outbound.write(numbered(2, padding: 60_000))
        let received = try await scope.within(.seconds(10), "the next, allowed message arriving") {
            var inbound = accepted.inbound.makeAsyncIterator()
            return try await inbound.next()
        }
        try scope.require(received?.taskLog.header.sequence == 2, "after a refused message the link should carry the next; got \(String(describing: received))")
    }

    static func connectRefused(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        let scope = fixture.scope
        let client = try fixture.transport("client")
        defer { client.beginGracefulShutdown() }
        let address = subject.unreachableAddress()
        do {
            _ = try await scope.within(.seconds(10), "the dial to \(address) failing") {
                try await client.connect(to: address, expectedPeer: nil)
            }
            throw scope.fail("a dial to \(address), where nothing listens, succeeded")
        } catch is TransportError {
        } catch let failure as ConformanceFailure {
            throw failure
        } catch {
            throw scope.fail("a failed dial should throw TransportError, threw \(type(of: error)): \(error)")
        }
    }

    static func wrongPeerRefused(_ subject: any TransportTestSubject, _ fixture: TransportFixture) async throws {
        guard subject.authenticatesPeers else { return }
        let scope = fixture.scope
        let server = try await fixture.listener("server")
        let client = try fixture.transport("client")
        defer { client.beginGracefulShutdown(); server.stop() }
        do {
            _ = try await scope.within(.seconds(10), "the dial expecting another node failing") {
                try await client.connect(to: server.address, expectedPeer: NodeID("somebody-else"))
            }
            throw scope.fail("a dial that expected 'somebody-else' linked to 'server'")
        } catch let failure as ConformanceFailure {
            throw failure
        } catch {}
    }
}
