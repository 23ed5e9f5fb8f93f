import AgentFlowCore
import AgentFlowInMemory
import AgentFlowProto
import AgentFlowTLS
import AgentFlowTransportKit
import SwiftProtobuf
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The contract every transport keeps, run against each registered one.
/// A new transport adds one case to `TransportKind` and gets all of this.
@Suite("Transport conformance", .serialized)
struct TransportConformanceTests {
    let pki: TestPKI
    let network = InMemoryNetwork()

    init() throws { pki = try TestPKI() }

    /// A listening "server" transport, a "client" transport, the client's link
    /// to the server (checked to reach node "server") and the server's side of it.
    func linkPair(_ kind: TransportKind, security: TransportSecurity? = nil, options: SocketLinkOptions = TransportKind.testOptions)
        async throws -> (Listener, any Transport, MeshStream, MeshStream) {
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network, security: security, options: options))
        let client = try kind.make(node: "client", pki: pki, network: network, security: security, options: options)
        let link = try await client.connect(to: server.address, expectedPeer: security == .plaintext ? nil : NodeID("server"))
        let accepted = try #require(await server.accepted.next())
        return (server, client, link, accepted)
    }

    @Test("links connect both ways, with proven identities", arguments: TransportKind.allCases)
    func connectBothWays(kind: TransportKind) async throws {
        let a = try await Listener.start(kind.make(node: "node-a", pki: pki, network: network))
        let b = try await Listener.start(kind.make(node: "node-b", pki: pki, network: network))
        let ab = try await a.transport.connect(to: b.address, expectedPeer: NodeID("node-b"))
        let ba = try await b.transport.connect(to: a.address, expectedPeer: NodeID("node-a"))
        #expect(ab.peer.certifiedNodeID == NodeID("node-b"))
        #expect(ba.peer.certifiedNodeID == NodeID("node-a"))
        let atB = try #require(await b.accepted.next())
        let atA = try #require(await a.accepted.next())
        #expect(atB.peer.certifiedNodeID == NodeID("node-a"))
        #expect(atA.peer.certifiedNodeID == NodeID("node-b"))
        #expect(atB.peer.transport == kind.rawValue)

        try await ab.outbound.write(message(1))
        try await atB.outbound.write(message(2))
        try await ba.outbound.write(message(3))
        try await atA.outbound.write(message(4))
        try await withTimeout {
            var inbound = atB.inbound.makeAsyncIterator()
            let received1 = try await inbound.next()
            #expect(received1?.taskLog.header.sequence == 1)
            var back = ab.inbound.makeAsyncIterator()
            let received2 = try await back.next()
            #expect(received2?.taskLog.header.sequence == 2)
            var other = atA.inbound.makeAsyncIterator()
            let received3 = try await other.next()
            #expect(received3?.taskLog.header.sequence == 3)
            var otherBack = ba.inbound.makeAsyncIterator()
            let received4 = try await otherBack.next()
            #expect(received4?.taskLog.header.sequence == 4)
        }
        await a.stop()
        await b.stop()
    }

    @Test("streams both ways at once, in order, many and large messages", arguments: TransportKind.allCases, [false, true])
    func orderedBidirectionalStreaming(kind: TransportKind, plaintext: Bool) async throws {
        // Plaintext (h2c for grpc) has its own write path: without TLS between, a flush can flip writability.
        if kind == .memory && plaintext { return }
        let security: TransportSecurity? = plaintext ? .plaintext : nil
        let (server, client, link, accepted) = try await linkPair(kind, security: security)
        // 20,000 small messages each way, with a 1 MiB and a 3 MiB one in the middle.
        let count: UInt64 = 20_000
        @Sendable func size(_ n: UInt64) -> Int { n == 5_000 ? 1 << 20 : n == 12_345 ? 3 << 20 : Int(n % 300) }
        try await withTimeout(.seconds(45)) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for side in [link, accepted] {
                    group.addTask {
                        for n in 1...count { try await side.outbound.write(message(n, padding: size(n))) }
                        await side.outbound.finish()
                    }
                    group.addTask {
                        var expected: UInt64 = 1
                        for try await envelope in side.inbound {
                            #expect(envelope.taskLog.header.sequence == expected)
                            #expect(envelope.taskLog.line.utf8.count == size(expected))
                            expected += 1
                        }
                        #expect(expected == count + 1)
                    }
                }
                try await group.waitForAll()
            }
        }
        client.beginGracefulShutdown()
        await server.stop()
    }

    @Test("a slow reader makes the writer wait: memory stays bounded", arguments: TransportKind.allCases)
    func backpressure(kind: TransportKind) async throws {
        // A 64 KiB message limit keeps HTTP/2 windows at their 1 MiB floor.
        var options = TransportKind.testOptions
        options.maxMessageBytes = 64 * 1024
        let (server, client, link, accepted) = try await linkPair(kind, options: options)
        let written = Atomic<Int>(0)
        // 8 KiB messages: 32 MiB if nothing pushed back.
        let writer = Task {
            for n in 1...4_096 {
                try await link.outbound.write(message(UInt64(n), padding: 8_192))
                written.add(1, ordering: .relaxed)
            }
        }
        try await Task.sleep(for: .milliseconds(700))
        let stalledAt = written.load(ordering: .relaxed)
        // Socket buffers, HTTP/2 windows and the bridges together hold a few MiB at most (< 12 MiB).
        #expect(stalledAt < 1_536, "the writer should stall while nobody reads (\(stalledAt) messages of 8 KiB written)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(written.load(ordering: .relaxed) - stalledAt < 64, "the writer kept going without a reader")
        // Now read everything: the writer finishes.
        try await withTimeout(.seconds(30)) {
            var expected = 1
            for try await envelope in accepted.inbound {
                #expect(envelope.taskLog.header.sequence == UInt64(expected))
                expected += 1
                if expected > 4_096 { break }
            }
            try await writer.value
        }
        #expect(written.load(ordering: .relaxed) == 4_096)
        client.beginGracefulShutdown()
        await server.stop()
    }

    @Test("a peer's clean close ends the other side's inbound", arguments: TransportKind.allCases)
    func peerClose(kind: TransportKind) async throws {
        let (server, client, link, accepted) = try await linkPair(kind)
        try await link.outbound.write(message(7))
        await link.outbound.finish()
        try await withTimeout {
            var inbound = accepted.inbound.makeAsyncIterator()
            let received5 = try await inbound.next()
            #expect(received5?.taskLog.header.sequence == 7)
            let received6 = try await inbound.next()
            #expect(received6 == nil)
        }
        // The other half still works until the server finishes it.
        try await accepted.outbound.write(message(8))
        await accepted.outbound.finish()
        try await withTimeout {
            var inbound = link.inbound.makeAsyncIterator()
            let received7 = try await inbound.next()
            #expect(received7?.taskLog.header.sequence == 8)
            let received8 = try await inbound.next()
            #expect(received8 == nil)
        }
        client.beginGracefulShutdown()
        await server.stop()
    }

    @Test("a crashed peer's links end promptly with an error", arguments: TransportKind.allCases)
    func peerCrash(kind: TransportKind) async throws {
        let (server, client, link, accepted) = try await linkPair(kind)
        try await link.outbound.write(message(1))
        let started = ContinuousClock.now
        crash(client)
        try await withTimeout(.seconds(3)) {
            var inbound = accepted.inbound.makeAsyncIterator()
            let received9 = try await inbound.next()
            #expect(received9?.taskLog.header.sequence == 1)
            await #expect(throws: (any Error).self) { _ = try await inbound.next() }
        }
        #expect(ContinuousClock.now - started < .seconds(2))
        await #expect(throws: (any Error).self) {
            for n in 1...1_000 { try await accepted.outbound.write(message(UInt64(n), padding: 1_000)) }
        }
        client.beginGracefulShutdown()
        await server.stop()
    }

    @Test("shutdown while busy ends every link and the listener promptly", arguments: TransportKind.allCases)
    func shutdownWhileBusy(kind: TransportKind) async throws {
        let (server, client, link, accepted) = try await linkPair(kind)
        let writer = Task {
            var n: UInt64 = 0
            while n < 1_000_000 {
                n += 1
                try await link.outbound.write(message(n, padding: 100))
            }
        }
        let reader = Task {
            for try await _ in accepted.inbound {}
        }
        try await Task.sleep(for: .milliseconds(200))
        server.transport.beginGracefulShutdown()
        #expect(await finishes(within: .seconds(5)) { _ = await reader.result }, "the server's inbound should end")
        #expect(await finishes(within: .seconds(5)) { _ = await writer.result }, "the client's writer should see the link end")
        #expect(await finishes(within: .seconds(5)) { _ = try? await server.task.value }, "listen should return")
        writer.cancel()
        reader.cancel()
        if case .success = await writer.result { Issue.record("the writer should have seen the link end") }
        client.beginGracefulShutdown()
    }

    @Test("an oversize message is refused, and the link stays usable", arguments: TransportKind.allCases)
    func oversizeRefused(kind: TransportKind) async throws {
        var options = TransportKind.testOptions
        options.maxMessageBytes = 64 * 1024
        let (server, client, link, accepted) = try await linkPair(kind, options: options)
        await #expect(throws: TransportError.self) { try await link.outbound.write(message(1, padding: 70_000)) }
        do {
            try await link.outbound.write(message(1, padding: 70_000))
        } catch let error as TransportError {
            #expect(error.kind == .messageTooLarge)
        }
        try await link.outbound.write(message(2, padding: 60_000))
        try await withTimeout {
            var inbound = accepted.inbound.makeAsyncIterator()
            let received10 = try await inbound.next()
            #expect(received10?.taskLog.header.sequence == 2)
        }
        client.beginGracefulShutdown()
        await server.stop()
    }

    @Test("a dial to an address where nothing listens fails cleanly", arguments: TransportKind.allCases)
    func connectRefused(kind: TransportKind) async throws {
        let client = try kind.make(node: "client", pki: pki, network: network)
        let address = kind.usesSockets ? HostPort(host: "127.0.0.1", port: 1) : HostPort(host: "mem-nobody", port: 9)
        await #expect(throws: TransportError.self) { _ = try await client.connect(to: address, expectedPeer: nil) }
    }
}
