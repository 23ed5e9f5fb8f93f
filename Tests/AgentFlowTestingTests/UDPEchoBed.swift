import AgentFlowCore
import AgentFlowTesting
import NIOCore
import NIOPosix

/// A probe written here, as a third party would: one datagram to a target,
/// passed when it comes back. The bed runs an echo server on loopback and a
/// silent one (a bound socket that never answers).
struct UDPEchoBed: ProbeTestBed {
    /// The planted bug: wait 3 s for an answer whatever the timeout says.
    let ignoresTimeout: Bool

    func makeProbe(context: ProbeContext, answering: Bool) async throws -> any Probe {
        let target = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                answering ? channel.pipeline.addHandler(EchoHandler()) : channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return UDPEchoProbe(target: target.localAddress!, timeout: ignoresTimeout ? .seconds(3) : context.timeout, keepAlive: target)
    }
}

final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

struct UDPEchoProbe: Probe {
    let target: SocketAddress
    let timeout: Duration
    let keepAlive: any Channel
    var name: String { "udp-echo" }

    func run() async throws -> ProbeReport {
        let (replies, continuation) = AsyncStream.makeStream(of: Void.self)
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(ReplyHandler(continuation: continuation)) }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { channel.close(promise: nil) }
        let started = ContinuousClock.now
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: ByteBuffer(string: "ping"))).get()
        let answered = await withTaskGroup(of: Bool.self) { group in
            group.addTask { for await _ in replies { return true }; return false }
            group.addTask { (try? await Task.sleep(for: timeout)) != nil ? false : false }
            let first = await group.next() ?? false
            group.cancelAll()
            continuation.finish()
            return first
        }
        guard answered else {
            return ProbeReport(probe: name, outcome: .failed, summary: "no echo from \(target) within \(timeout)")
        }
        let rtt = ContinuousClock.now - started
        return ProbeReport(probe: name, outcome: .passed, summary: "\(target) echoed", facts: [.init("rtt_ms", "\(rtt)")])
    }
}

final class ReplyHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let continuation: AsyncStream<Void>.Continuation

    init(continuation: AsyncStream<Void>.Continuation) { self.continuation = continuation }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        continuation.yield()
    }
}
