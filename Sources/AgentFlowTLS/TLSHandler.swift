public import AgentFlowCore
public import NIOCore

/// Mutual TLS on a NIO pipeline, over OpenSSL memory BIOs: ciphertext in and
/// out at the socket side, plaintext in and out above it.
///
/// Writes issued before the handshake completes wait in order. When the
/// handshake completes the handler fires `TLSEstablished` (the peer's proven
/// node id and the ALPN protocol); when it fails, it fires the
/// `TLSHandshakeError` through `errorCaught` and closes the channel. A
/// connection that has not finished its handshake within `handshakeTimeout`
/// (a half-open or silent client) is closed too.
///
/// Outgoing plaintext is encrypted at `write` and the ciphertext leaves at
/// `flush`, so the layer above decides batching: one flush, one socket write.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State { case handshaking, established, closed }

    private let connection: TLSConnection
    private let handshakeTimeout: TimeAmount
    private var state = State.handshaking
    private var bufferedWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var bufferedFlush = false
    /// Promises of writes encrypted since the last flush.
    private var unflushedPromises: [EventLoopPromise<Void>] = []
    private var timeout: Scheduled<Void>?
    private var plaintextProduced = false

    public init(context: TLSContext, handshakeTimeout: TimeAmount = .seconds(10)) throws {
        self.connection = try TLSConnection(context: context)
        self.handshakeTimeout = handshakeTimeout
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard timeout == nil, state == .handshaking else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let limit = handshakeTimeout
        timeout = context.eventLoop.scheduleTask(in: limit) {
            let (handler, context) = loopBound.value
            guard handler.state == .handshaking else { return }
            handler.fail(context: context, TLSHandshakeError(reason: "no TLS handshake within \(limit.nanoseconds / 1_000_000) ms", details: []))
        }
        if connection.context.role == .client { advanceHandshake(context: context) }
        // The handshake reads for itself, even while a layer above has autoRead off.
        context.read()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if state == .handshaking {
            state = .closed
            context.fireErrorCaught(TLSHandshakeError(reason: "the peer closed the connection during the TLS handshake", details: []))
        }
        state = .closed
        failBuffered(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state != .closed else { return }
        connection.receive(unwrapInboundIn(data))
        if state == .handshaking {
            advanceHandshake(context: context)
        }
        if state == .established { readPlaintext(context: context) }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        writeCiphertext(context: context, promises: [])
        if plaintextProduced {
            plaintextProduced = false
            context.fireChannelReadComplete()
        } else if state == .handshaking || state == .established {
            // Nothing for the layers above yet (a handshake step, a partial record): ask for more
            // bytes, since a layer above that paused reading has no reason to.
            context.read()
            context.fireChannelReadComplete()
        }
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        do {
            switch try connection.handshake() {
            case .wantRead, .closed:
                writeCiphertext(context: context, promises: [])
            case .done:
                state = .established
                timeout?.cancel()
                writeCiphertext(context: context, promises: [])
                context.fireUserInboundEventTriggered(TLSEstablished(
                    peerNodeID: connection.peerNodeID, peerCommonName: connection.peerCommonName,
                    alpn: connection.negotiatedALPN, peerCertificateExpiry: connection.peerNotAfter))
                flushBuffered(context: context)
            }
        } catch {
            fail(context: context, error)
        }
    }

    private func readPlaintext(context: ChannelHandlerContext) {
        while state == .established {
            // Everything the received records hold goes up in one buffer (a record at most
            // 16 KiB each): a large message then reaches the framing layer whole.
            let room = max(16_640, connection.pendingInput)
            var buffer = context.channel.allocator.buffer(capacity: room)
            var closed = false
            do {
                while buffer.writableBytes >= 16_640 || buffer.readableBytes == 0 {
                    var result: Int? = 0
                    _ = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16_640) { bytes in
                        result = try connection.readPlaintext(into: bytes)
                        return result ?? 0
                    }
                    guard let count = result else { closed = true; break }
                    if count == 0 { break }
                }
            } catch {
                fail(context: context, error)
                return
            }
            if buffer.readableBytes > 0 {
                plaintextProduced = true
                context.fireChannelRead(wrapInboundOut(buffer))
            }
            if closed {
                // close_notify: the peer ended the TLS session; close our side too.
                context.close(promise: nil)
                return
            }
            if buffer.readableBytes == 0 || connection.pendingInput == 0 { return }
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plaintext = unwrapOutboundIn(data)
        switch state {
        case .handshaking:
            bufferedWrites.append((plaintext, promise))
        case .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        case .established:
            do {
                try plaintext.withUnsafeReadableBytes { try connection.writePlaintext($0) }
                if let promise { unflushedPromises.append(promise) }
            } catch {
                promise?.fail(error)
                fail(context: context, error)
            }
        }
    }

    public func flush(context: ChannelHandlerContext) {
        switch state {
        case .handshaking: bufferedFlush = true
        case .closed: break
        case .established:
            let promises = unflushedPromises
            unflushedPromises.removeAll(keepingCapacity: true)
            writeCiphertext(context: context, promises: promises)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all, state == .established {
            connection.shutdown()
            writeCiphertext(context: context, promises: unflushedPromises)
            unflushedPromises.removeAll()
        }
        context.close(mode: mode, promise: promise)
    }

    /// Sends everything OpenSSL has produced; `promises` complete when it is written.
    private func writeCiphertext(context: ChannelHandlerContext, promises: [EventLoopPromise<Void>]) {
        guard let buffer = connection.takeOutput() else {
            for promise in promises { promise.succeed() }
            return
        }
        if promises.isEmpty {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            let written = context.eventLoop.makePromise(of: Void.self)
            for promise in promises { written.futureResult.cascade(to: promise) }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: written)
        }
    }

    private func flushBuffered(context: ChannelHandlerContext) {
        let writes = bufferedWrites
        bufferedWrites.removeAll()
        for (buffer, promise) in writes { write(context: context, data: wrapOutboundOut(buffer), promise: promise) }
        if bufferedFlush || !writes.isEmpty {
            bufferedFlush = false
            flush(context: context)
        }
    }

    private func failBuffered(_ error: any Error) {
        for (_, promise) in bufferedWrites { promise?.fail(error) }
        bufferedWrites.removeAll()
        for promise in unflushedPromises { promise.fail(error) }
        unflushedPromises.removeAll()
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        guard state != .closed else { return }
        state = .closed
        timeout?.cancel()
        // Send the alert OpenSSL queued (the peer learns why), then close.
        writeCiphertext(context: context, promises: [])
        failBuffered(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}

/// Fired up the pipeline when the TLS handshake has completed and the peer's
/// certificate chained to the cluster CA.
public struct TLSEstablished: Sendable, Hashable {
    /// The node id the peer's certificate names, nil if its common name is not a node id.
    public let peerNodeID: NodeID?
    /// The certificate's common name as written (for error messages).
    public let peerCommonName: String?
    /// The ALPN protocol both sides agreed on.
    public let alpn: String?
    /// When the peer's certificate expires (Unix seconds).
    public var peerCertificateExpiry: Int64? = nil
}
