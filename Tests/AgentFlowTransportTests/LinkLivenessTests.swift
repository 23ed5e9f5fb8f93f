import AgentFlowCore
import AgentFlowInMemory
import AgentFlowProto
import AgentFlowTransportKit
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// A peer that goes silent without closing (a cable pulled, a partition) is
/// detected by keepalive and the dead-peer timeout, on both ends.
@Suite("Link liveness", .serialized)
struct LinkLivenessTests {
    let pki: TestPKI
    let network = InMemoryNetwork()

    init() throws { pki = try TestPKI() }

    @Test("a silent partition ends the link on both sides within the dead-peer timeout",
          arguments: TransportKind.allCases.filter(\.usesSockets))
    func partition(kind: TransportKind) async throws {
        var options = TransportKind.testOptions
        options.keepaliveInterval = .milliseconds(200)
        options.deadPeerTimeout = .seconds(3)
        let server = try await Listener.start(kind.make(node: "server", pki: pki, network: network, options: options))
        let proxy = try await BlackHoleProxy.start(to: server.address)
        let client = try kind.make(node: "client", pki: pki, network: network, options: options)
        let link = try await client.connect(to: proxy.address, expectedPeer: NodeID("server"))
        let accepted = try #require(await server.accepted.next())
        // Healthy and idle for several keepalive intervals: the link stays up.
        try await Task.sleep(for: .seconds(3))
        try await link.outbound.write(message(1))
        var serverInbound = accepted.inbound.makeAsyncIterator()
        let first = try await serverInbound.next()
        #expect(first?.taskLog.header.sequence == 1)

        // Now the network swallows everything, without a FIN or a reset.
        proxy.blackHole()
        let started = ContinuousClock.now
        async let clientEnded = finishes(within: .seconds(8)) {
            var inbound = link.inbound.makeAsyncIterator()
            _ = try? await inbound.next()
        }
        async let serverEnded = finishes(within: .seconds(8)) {
            var inbound = accepted.inbound.makeAsyncIterator()
            _ = try? await inbound.next()
        }
        let (clientDone, serverDone) = await (clientEnded, serverEnded)
        #expect(clientDone, "the dialler should drop a silent peer")
        #expect(serverDone, "the listener should drop a silent peer")
        #expect(ContinuousClock.now - started < .seconds(7))
        await #expect(throws: (any Error).self) { try await link.outbound.write(message(2)) }
        proxy.stop()
        await server.stop()
    }
}

/// A TCP relay that can start dropping every byte both ways while keeping
/// both connections open.
final class BlackHoleProxy: Sendable {
    let address: HostPort
    private let server: any Channel
    private let state: State

    /// Shared by the relays: whether bytes are dropped now.
    final class State: Sendable {
        let dropping = Atomic<Bool>(false)
    }

    private init(address: HostPort, server: any Channel, state: State) {
        self.address = address
        self.server = server
        self.state = state
    }

    func blackHole() { state.dropping.store(true, ordering: .relaxed) }
    func stop() { server.close(promise: nil) }

    /// Forwards bytes to `peer` unless the proxy is dropping.
    final class Relay: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer = Mutex<(any Channel)?>(nil)
        let state: State

        init(state: State) { self.state = state }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !state.dropping.load(ordering: .relaxed) else { return }
            let bytes = unwrapInboundIn(data)
            peer.withLock { $0 }?.writeAndFlush(bytes, promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            peer.withLock { $0 }?.close(promise: nil)
        }
    }

    static func start(to target: HostPort) async throws -> BlackHoleProxy {
        let state = State()
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { inbound in
                let fromClient = Relay(state: state)
                let fromServer = Relay(state: state)
                return inbound.pipeline.addHandler(fromClient).flatMap {
                    ClientBootstrap(group: inbound.eventLoop)
                        .channelInitializer { $0.pipeline.addHandler(fromServer) }
                        .connect(host: target.host, port: target.port)
                        .map { outbound in
                            fromClient.peer.withLock { $0 = outbound }
                            fromServer.peer.withLock { $0 = inbound }
                        }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return BlackHoleProxy(address: HostPort(host: "127.0.0.1", port: server.localAddress!.port!), server: server, state: state)
    }
}
