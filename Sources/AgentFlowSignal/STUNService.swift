import AgentFlowCore
import AgentFlowSTUN
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The UDP side of the signal server: NIO datagram channels feeding
/// `STUNBindingResponder`, for the server's whole life. One socket at
/// `stun.listen`; with `stun.alternate`, four (RFC 5780), each answering on
/// its own or, for a CHANGE-REQUEST, through a sibling.
struct STUNService: Service, CustomStringConvertible {
    var description: String { "STUNService(\(listen))" }

    let listen: HostPort
    let alternate: HostPort?
    let responder: STUNBindingResponder
    let metrics: SignalMetrics
    let logger: Logger
    let onBound: @Sendable (Int) async -> Void

    func run() async throws {
        let roles = alternate == nil ? [STUNSocketRole.primary] : STUNSocketRole.all
        let sockets = STUNSockets()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for role in roles {
                let address = HostPort(host: role.otherIP ? alternate!.host : listen.host, port: role.otherPort ? alternate!.port : listen.port)
                let bound = AsyncStream<Int>.makeStream()
                group.addTask {
                    if let store = responder.registry.store as? any SynchronousHeartbeatStore {
                        try await runOnEventLoop(address, role: role, sockets: sockets, store: store, bound: bound.continuation)
                    } else {
                        try await runWithTasks(address, role: role, sockets: sockets, bound: bound.continuation)
                    }
                }
                // Bind one at a time, so a port that is taken fails the start, in order.
                var port: Int?
                for await value in bound.stream { port = value; break }
                guard let port else { break }
                if role == .primary {
                    await onBound(port)
                }
            }
            if alternate == nil {
                logger.info("STUN: RFC 5780 NAT behaviour discovery is off; set stun.alternate to a second IP:port of this host to offer it")
            }
            try await group.waitForAll()
        }
    }

    /// Memory store: every datagram is answered inside `channelRead` on the
    /// event loop, and answers are flushed once per read batch — no task hop.
    /// Reads are paced (`STUNDatagramHandler.readInterval`) rather than woken per
    /// datagram: at thousands of heartbeats a second, the per-wake-up cost, not
    /// the STUN work, is what a core spends its time on.
    private func runOnEventLoop(_ listen: HostPort, role: STUNSocketRole, sockets: STUNSockets, store: any SynchronousHeartbeatStore,
                                bound: AsyncStream<Int>.Continuation) async throws {
        defer { bound.finish() }
        let responder = self.responder
        let metrics = self.metrics
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            // One recvmmsg(2) per drain: up to 64 datagrams of up to 2 KiB each
            // (the vector read splits the receive buffer evenly between them).
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelOption(.datagramVectorReadMessageCount, value: STUNDatagramHandler.maxMessagesPerRead)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: STUNDatagramHandler.maxMessagesPerRead * 2048))
            // Room for a pacing interval's datagrams (the kernel caps it at net.core.rmem_max).
            .channelOption(.socketOption(.so_rcvbuf), value: 1 << 21)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(STUNDatagramHandler(responder: responder, store: store, metrics: metrics, role: role, sockets: sockets))
                }
            }
            .bind(host: listen.host, port: listen.port).get()
        let port = channel.localAddress?.port ?? listen.port
        sockets.set(role, channel)
        logger.info("STUN listening", metadata: ["address": "\(listen.host):\(port)", "protocol": "udp", "path": "event loop", "role": "\(role)"])
        bound.yield(port)
        // Graceful shutdown and cancellation both close the channel; waiting on
        // closeFuture alone would not notice a cancelled task.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// Stores that suspend (Redis): datagrams are answered from a task.
    private func runWithTasks(_ listen: HostPort, role: STUNSocketRole, sockets: STUNSockets, bound: AsyncStream<Int>.Continuation) async throws {
        defer { bound.finish() }
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: listen.host, port: listen.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let port = channel.channel.localAddress?.port ?? listen.port
        sockets.set(role, channel.channel)
        logger.info("STUN listening", metadata: ["address": "\(listen.host):\(port)", "protocol": "udp", "role": "\(role)"])
        bound.yield(port)
        try await withGracefulShutdownHandler {
            try await channel.executeThenClose { inbound, outbound in
                for try await envelope in inbound {
                    guard let source = Self.stunAddress(envelope.remoteAddress) else { continue }
                    let bytes = Array(envelope.data.readableBytesView)
                    let answer = await responder.respond(to: bytes, from: source.address, observedIP: source.ip, on: role)
                    metrics.countSTUN(answer.outcome)
                    guard let reply = answer.reply else { continue }
                    let envelope = AddressedEnvelope(remoteAddress: STUNSockets.destination(envelope.remoteAddress, port: answer.toPort), data: ByteBuffer(bytes: reply))
                    if answer.from == role {
                        try await outbound.write(envelope)
                    } else {
                        sockets.send(envelope, from: answer.from)
                    }
                }
            }
        } onGracefulShutdown: {
            channel.channel.close(promise: nil)
        }
    }

    /// The datagram's source as STUN needs it, and its IP as text (the
    /// observed address): converted once per datagram, not once per use.
    static func stunAddress(_ address: SocketAddress) -> (address: STUNAddress, ip: String)? {
        // The address bytes straight from the sockaddr (sockaddr_in: family, port, then 4
        // address bytes; sockaddr_in6: family, port, flow info, then 16): no text round trip.
        guard let port = address.port.flatMap(UInt16.init(exactly:)) else { return nil }
        let stun: STUNAddress
        switch address {
        case .v4(let v4): stun = STUNAddress(ip: withUnsafeBytes(of: v4.address) { Array($0[4..<8]) }, port: port)
        case .v6(let v6): stun = STUNAddress(ip: withUnsafeBytes(of: v6.address) { Array($0[8..<24]) }, port: port)
        case .unixDomainSocket: return nil
        }
        return (stun, stun.ipDescription)
    }
}

/// Answers STUN datagrams synchronously on the event loop (see `STUNService.runOnEventLoop`).
final class STUNDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let responder: STUNBindingResponder
    let store: any SynchronousHeartbeatStore
    let metrics: SignalMetrics
    private var pendingFlush = false
    private var readsInBatch = 0
    private var pacer: RepeatedTask?

    /// How often the socket is drained. Adds at most this much to an answer's
    /// latency, and bounds wake-ups to 1/interval. STUN clients wait ≥ 400 ms
    /// before they retransmit (RFC 8489 §6.2.1 suggests 500 ms), so 40 ms is
    /// invisible to them; at 10,000 nodes it cut the server's CPU from 6.3% to
    /// 4.4% of a core against 10 ms (one run). The socket's receive buffer holds
    /// what arrives in between (`SO_RCVBUF`, below), and a full batch is drained
    /// again at once.
    static let readInterval = TimeAmount.milliseconds(50)
    static let maxMessagesPerRead = 64

    let role: STUNSocketRole
    let sockets: STUNSockets

    init(responder: STUNBindingResponder, store: any SynchronousHeartbeatStore, metrics: SignalMetrics, role: STUNSocketRole, sockets: STUNSockets) {
        self.responder = responder
        self.store = store
        self.metrics = metrics
        self.role = role
        self.sockets = sockets
    }

    func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        pacer = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: Self.readInterval) { _ in
            loopBound.value.read()
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pacer?.cancel()
        pacer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readsInBatch += 1
        let envelope = unwrapInboundIn(data)
        guard let source = STUNService.stunAddress(envelope.remoteAddress) else { return }
        let answer = responder.respondNow(to: Array(envelope.data.readableBytesView), from: source.address, observedIP: source.ip, on: role, store: store)
        metrics.countSTUN(answer.outcome)
        guard let reply = answer.reply else { return }
        let out = AddressedEnvelope(remoteAddress: STUNSockets.destination(envelope.remoteAddress, port: answer.toPort), data: context.channel.allocator.buffer(bytes: reply))
        if answer.from == role {
            context.write(wrapOutboundOut(out), promise: nil)
            pendingFlush = true
        } else {
            sockets.send(out, from: answer.from)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if pendingFlush {
            pendingFlush = false
            context.flush()
        }
        // A full batch means more may be waiting: keep draining now.
        let full = readsInBatch >= Self.maxMessagesPerRead
        readsInBatch = 0
        if full { context.read() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A UDP error (e.g. ICMP port unreachable for a past answer) concerns one peer, never the responder.
    }
}

@available(*, unavailable)
extension STUNDatagramHandler: Sendable {}

/// The responder's bound sockets by role, so an answer to a CHANGE-REQUEST
/// leaves from the sibling it asked for. Filled as each binds; an answer for a
/// socket not bound yet (only during start) is dropped, and the client retries.
final class STUNSockets: Sendable {
    private let channels = Mutex<[STUNSocketRole: any Channel]>([:])

    func set(_ role: STUNSocketRole, _ channel: any Channel) {
        channels.withLock { $0[role] = channel }
    }

    func send(_ envelope: AddressedEnvelope<ByteBuffer>, from role: STUNSocketRole) {
        channels.withLock { $0[role] }?.writeAndFlush(envelope, promise: nil)
    }

    /// `source`, or its IP at `port` (RESPONSE-PORT).
    static func destination(_ source: SocketAddress, port: UInt16?) -> SocketAddress {
        guard let port else { return source }
        var destination = source
        destination.port = Int(port)
        return destination
    }
}
