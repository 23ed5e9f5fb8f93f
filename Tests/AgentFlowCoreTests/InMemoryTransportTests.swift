import Synchronization
import AgentFlowCore
import AgentFlowInMemory
import AgentFlowProto
import Logging
import SwiftProtobuf
import Testing

@Suite("In-memory transport")
struct InMemoryTransportTests {
    static func ping(_ nonce: UInt64) -> Envelope {
        var envelope = Envelope()
        envelope.ping = .with { $0.nonce = nonce }
        return envelope
    }

    /// Starts a listener whose handler echoes every envelope back; returns the transport and its address.
    static func echoServer(network: InMemoryNetwork, id: String = "server") async throws -> (InMemoryTransport, HostPort, Task<Void, any Error>) {
        let server = InMemoryTransport(localNodeID: NodeID(id)!, listenAddress: HostPort(host: "mem", port: 0), network: network, queueCapacity: 4)
        let task = Task {
            try await server.listen { stream in
                do {
                    for try await envelope in stream.inbound { try await stream.outbound.write(envelope) }
                    await stream.outbound.finish()
                } catch {}
            }
        }
        return (server, try await server.listeningAddress(), task)
    }

    @Test("links carry envelopes both ways, in order, with identities")
    func orderedBothWays() async throws {
        let network = InMemoryNetwork()
        let (server, address, listenTask) = try await Self.echoServer(network: network)
        let client = InMemoryTransport(localNodeID: NodeID("client")!, listenAddress: HostPort(host: "mem", port: 0), network: network)
        let stream = try await client.connect(to: address, expectedPeer: NodeID("server"))
        #expect(stream.peer.certifiedNodeID == NodeID("server"))
        try await withTimeout {
            let writer = Task {
                for nonce in 1...1_000 { try await stream.outbound.write(Self.ping(UInt64(nonce))) }
                await stream.outbound.finish()
            }
            var received: [UInt64] = []
            for try await envelope in stream.inbound { received.append(envelope.ping.nonce) }
            try await writer.value
            #expect(received == Array(1...1_000))
        }
        server.beginGracefulShutdown()
        try await listenTask.value
    }

    @Test("a slow reader makes the writer wait: memory stays bounded")
    func backpressure() async throws {
        let network = InMemoryNetwork()
        let server = InMemoryTransport(localNodeID: NodeID("server")!, listenAddress: HostPort(host: "mem", port: 1), network: network, queueCapacity: 4)
        let (accepted, acceptedContinuation) = AsyncStream.makeStream(of: MeshStream.self)
        let listenTask = Task { try await server.listen { acceptedContinuation.yield($0); try? await Task.sleep(for: .seconds(10)) } }
        let address = try await server.listeningAddress()
        let client = InMemoryTransport(localNodeID: NodeID("client")!, listenAddress: HostPort(host: "mem", port: 0), network: network, queueCapacity: 4)
        let stream = try await client.connect(to: address, expectedPeer: nil)
        let written = ManagedCounter()
        let writer = Task {
            for nonce in 1...100 {
                try await stream.outbound.write(Self.ping(UInt64(nonce)))
                written.increment()
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(written.value == 4, "the writer must stop once the reader's queue (4) is full")
        var iterator = accepted.makeAsyncIterator()
        let serverSide = try #require(await iterator.next())
        let received = try await withTimeout {
            var nonces: [UInt64] = []
            for try await envelope in serverSide.inbound {
                nonces.append(envelope.ping.nonce)
                if nonces.count == 100 { break }
            }
            return nonces
        }
        #expect(received == Array(1...100))
        try await writer.value
        server.beginGracefulShutdown()
        listenTask.cancel()
    }

    @Test("dialling nothing, or the wrong node, fails with a clear error")
    func dialErrors() async throws {
        let network = InMemoryNetwork()
        let client = InMemoryTransport(localNodeID: NodeID("client")!, listenAddress: HostPort(host: "mem", port: 0), network: network)
        await #expect(throws: TransportError.self) { _ = try await client.connect(to: HostPort(host: "mem", port: 9), expectedPeer: nil) }
        let (server, address, listenTask) = try await Self.echoServer(network: network)
        do {
            _ = try await client.connect(to: address, expectedPeer: NodeID("someone-else"))
            Issue.record("dialled the wrong node")
        } catch let error as TransportError {
            #expect(error.kind == .handshakeFailed)
            #expect(error.message.contains("someone-else"))
        }
        server.beginGracefulShutdown()
        try await listenTask.value
    }

    @Test("a crashed peer ends the link with an error, promptly")
    func crash() async throws {
        let network = InMemoryNetwork()
        let (server, address, listenTask) = try await Self.echoServer(network: network)
        let client = InMemoryTransport(localNodeID: NodeID("client")!, listenAddress: HostPort(host: "mem", port: 0), network: network)
        let stream = try await client.connect(to: address, expectedPeer: nil)
        try await stream.outbound.write(Self.ping(1))
        client.crash()
        try await withTimeout {
            var sawError = false
            do {
                for try await _ in stream.inbound {}
            } catch {
                sawError = true
            }
            #expect(sawError)
        }
        server.beginGracefulShutdown()
        try await listenTask.value
    }

    @Test("two listeners cannot share an address")
    func addressInUse() async throws {
        let network = InMemoryNetwork()
        let (server, address, listenTask) = try await Self.echoServer(network: network)
        let second = InMemoryTransport(localNodeID: NodeID("second")!, listenAddress: address, network: network)
        await #expect(throws: TransportError.self) { try await second.listen { _ in } }
        await #expect(throws: TransportError.self) { _ = try await second.listeningAddress() }
        server.beginGracefulShutdown()
        try await listenTask.value
    }
}

/// A counter shared between tasks in a test.
final class ManagedCounter: Sendable {
    private let storage = Mutex(0)
    func increment() { storage.withLock { $0 += 1 } }
    var value: Int { storage.withLock { $0 } }
}

