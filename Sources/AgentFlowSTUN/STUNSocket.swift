import AgentFlowCore
public import NIOCore
import NIOPosix

/// One UDP socket that runs STUN transactions: a request goes to any server
/// address, and its answer is matched by transaction id whichever address it
/// comes from (an RFC 5780 CHANGE-REQUEST answer comes from another one).
/// Several transactions may share the socket; that is the point for NAT
/// behaviour discovery, whose tests compare the mappings one local port gets.
///
/// A request that arrives here (our own request, hairpinned back through the
/// NAT) completes its transaction too: that is how hairpinning is tested.
public final class STUNSocket: Sendable {
    /// What came back for one transaction.
    public struct Answer: Sendable {
        public var message: STUNMessage
        public var bytes: [UInt8]
        /// Where the datagram came from.
        public var source: SocketAddress
        public var roundTrip: Duration
    }

    let channel: any Channel
    private let handler: NIOLoopBound<TransactionHandler>
    /// The address this socket is bound to (a concrete IP when it was bound to one).
    public let localAddress: SocketAddress

    private init(channel: any Channel, handler: NIOLoopBound<TransactionHandler>) {
        self.channel = channel
        self.handler = handler
        localAddress = channel.localAddress!
    }

    /// Binds a socket on `host` (default: the wildcard of `server`'s family) and port 0.
    public static func bind(host: String, port: Int = 0) async throws -> STUNSocket {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let channel = try await DatagramBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(TransactionHandler()) }
            }
            .bind(host: host, port: port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: TransactionHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return STUNSocket(channel: channel, handler: handler)
    }

    /// The local IP address the kernel would use to reach `server` (from a
    /// connected UDP socket that sends nothing): what "no NAT" is compared with.
    public static func localIP(toward server: SocketAddress) async throws -> String {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: server).get()
        defer { channel.close(promise: nil) }
        guard let ip = channel.localAddress?.ipAddress else { throw TransportError(.unsupportedAddress, "no local address toward \(server)") }
        return ip
    }

    /// Sends `request` to `server`, retransmitting (after 250 ms, then doubling)
    /// until an answer with its transaction id arrives or `timeout` passes (nil).
    public func transact(_ request: STUNMessage, to server: SocketAddress, timeout: Duration) async throws -> Answer? {
        let bytes = try request.encode(fingerprint: true)
        return try await transact(bytes, transactionID: request.transactionID, to: server, timeout: timeout)
    }

    /// As above, with the request already encoded.
    public func transact(_ bytes: [UInt8], transactionID: [UInt8], to server: SocketAddress, timeout: Duration) async throws -> Answer? {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: Answer?.self)
        let handler = self.handler
        let channel = self.channel
        let started = ContinuousClock.now
        loop.execute {
            handler.value.start(transactionID: transactionID, bytes: bytes, to: server, channel: channel, promise: promise,
                                started: started, timeout: TimeAmount.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000))
        }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            loop.execute { handler.value.finish(transactionID, with: nil) }
        }
    }

    /// Waits for a datagram with `transactionID` that another socket's request
    /// caused (RFC 5780 RESPONSE-PORT), sending nothing; nil after `timeout`.
    public func expect(transactionID: [UInt8], timeout: Duration) async throws -> Answer? {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: Answer?.self)
        let handler = self.handler
        let started = ContinuousClock.now
        let amount = TimeAmount.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        loop.execute { handler.value.wait(transactionID: transactionID, promise: promise, started: started, timeout: amount, loop: loop) }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            loop.execute { handler.value.finish(transactionID, with: nil) }
        }
    }

    /// Sends one datagram and expects nothing back.
    public func send(_ bytes: [UInt8], to address: SocketAddress) {
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: bytes)), promise: nil)
    }

    public func close() async {
        try? await channel.close()
    }

    /// Matches answers to transactions; all on the channel's event loop.
    final class TransactionHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>

        struct Pending {
            var promise: EventLoopPromise<Answer?>
            var started: ContinuousClock.Instant
            var timers: [Scheduled<Void>]
        }

        private var pending: [[UInt8]: Pending] = [:]

        func start(transactionID: [UInt8], bytes: [UInt8], to server: SocketAddress, channel: any Channel, promise: EventLoopPromise<Answer?>,
                   started: ContinuousClock.Instant, timeout: TimeAmount) {
            let loop = channel.eventLoop
            let send: @Sendable () -> Void = { channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: bytes)), promise: nil) }
            send()
            var timers: [Scheduled<Void>] = []
            var delay = TimeAmount.milliseconds(250)
            var at = delay
            while at < timeout {
                timers.append(loop.scheduleTask(in: at) { send() })
                delay = delay * 2
                at = at + delay
            }
            let bound = NIOLoopBound(self, eventLoop: loop)
            timers.append(loop.scheduleTask(in: timeout) { bound.value.finish(transactionID, with: nil) })
            pending[transactionID] = Pending(promise: promise, started: started, timers: timers)
        }

        func wait(transactionID: [UInt8], promise: EventLoopPromise<Answer?>, started: ContinuousClock.Instant, timeout: TimeAmount, loop: any EventLoop) {
            let bound = NIOLoopBound(self, eventLoop: loop)
            let timer = loop.scheduleTask(in: timeout) { bound.value.finish(transactionID, with: nil) }
            pending[transactionID] = Pending(promise: promise, started: started, timers: [timer])
        }

        func finish(_ transactionID: [UInt8], with answer: Answer?) {
            guard let entry = pending.removeValue(forKey: transactionID) else { return }
            entry.timers.forEach { $0.cancel() }
            entry.promise.succeed(answer)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let bytes = Array(envelope.data.readableBytesView)
            guard let message = try? STUNMessage.parse(bytes), let entry = pending[message.transactionID] else { return }
            finish(message.transactionID, with: Answer(message: message, bytes: bytes, source: envelope.remoteAddress, roundTrip: ContinuousClock.now - entry.started))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // ICMP unreachable for one destination: the transaction times out; the socket stays.
        }

        func channelInactive(context: ChannelHandlerContext) {
            for id in Array(pending.keys) { finish(id, with: nil) }
            context.fireChannelInactive()
        }
    }
}

@available(*, unavailable)
extension STUNSocket.TransactionHandler: Sendable {}

extension STUNAddress {
    /// The NIO socket address for this STUN address.
    public var socketAddress: SocketAddress {
        get throws { try SocketAddress(ipAddress: ipDescription, port: Int(port)) }
    }

    /// The STUN address of a NIO socket address (nil for a Unix socket).
    public init?(_ address: SocketAddress) {
        guard let ip = address.ipAddress, let port = address.port else { return nil }
        self.init(ip: ip, port: UInt16(port))
    }
}
