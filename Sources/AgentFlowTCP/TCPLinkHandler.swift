import AgentFlowCore
import SwiftProtobuf
import AgentFlowTLS
import AgentFlowTransportKit
import NIOCore

/// One `tcp` link on one connection: waits for TLS (if on), exchanges the
/// preface, then turns frames into envelopes for the `LinkBridge` and the
/// bridge's batches into frames. A slow consumer turns the channel's autoRead
/// off until it catches up, so the socket stops being read and TCP's own
/// window pushes back on the sender. Pings when idle; closes a peer silent past the dead-peer timeout.
final class TCPLinkHandler: ChannelDuplexHandler, LinkSink {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role {
        case accepted(@Sendable (MeshStream) -> Void)
        case dialled(EventLoopPromise<MeshStream>, expectedPeer: NodeID?)
    }

    private enum Phase { case awaitingTLS, awaitingPreface, open, closed }

    private let role: Role
    private let options: SocketLinkOptions
    private let transportName: String
    private var phase: Phase
    private var decoder: TCPFrameDecoder
    private var cumulation: ByteBuffer?
    private var bridge: LinkBridge?
    private var identity: PeerIdentity?
    private var readPaused = false
    private var sentEnd = false
    /// Our end frame (and so everything before it) has reached the socket.
    private var endWritten = false
    private var receivedEnd = false
    private var lastReceived = NIODeadline.now()
    private var lastSent = NIODeadline.now()
    private var timer: RepeatedTask?
    private var prefaceTimeout: Scheduled<Void>?
    private var failure: TransportError?
    private var context: ChannelHandlerContext?

    init(role: Role, usesTLS: Bool, options: SocketLinkOptions, transportName: String) {
        self.role = role
        self.options = options
        self.transportName = transportName
        self.phase = usesTLS ? .awaitingTLS : .awaitingPreface
        self.decoder = TCPFrameDecoder(maxPayload: options.maxMessageBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if phase == .awaitingPreface && context.channel.isActive { begin(context: context, established: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A dial that never connected still answers its caller.
        finish(failure ?? TransportError(.connectionRefused, "the connection closed before the link was established"))
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if phase == .awaitingPreface && timer == nil { begin(context: context, established: nil) }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let established = event as? TLSEstablished, phase == .awaitingTLS {
            phase = .awaitingPreface
            begin(context: context, established: established)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// TLS is done (or off): check the peer, send our preface, wait for theirs.
    private func begin(context: ChannelHandlerContext, established: TLSEstablished?) {
        let remote = context.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
        let expected: NodeID? = if case .dialled(_, let expectedPeer) = role { expectedPeer } else { nil }
        do {
            identity = try LinkSecurity.admit(established, expectedPeer: expected, remoteAddress: remote, transport: transportName)
        } catch {
            close(context: context, error)
            return
        }
        var preface = context.channel.allocator.buffer(capacity: TCPFrame.preface.count)
        preface.writeBytes(TCPFrame.preface)
        context.writeAndFlush(wrapOutboundOut(preface), promise: nil)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        prefaceTimeout = context.eventLoop.scheduleTask(in: options.handshakeTimeout.timeAmount) {
            let (handler, context) = loopBound.value
            guard handler.phase == .awaitingPreface else { return }
            handler.close(context: context, TransportError(.timedOut, "the peer sent no AgentFlow TCP preface in time"))
        }
        lastReceived = .now()
        let interval = options.keepaliveInterval.timeAmount
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.keepalive(context: context)
        }
    }

    /// Liveness: each side sends a ping when it has sent nothing for a
    /// keepalive interval, and declares the peer dead when it has received
    /// nothing for the dead-peer timeout. Pings need no answer, so a side whose
    /// reading is paused (backpressure) still proves it is alive.
    private func keepalive(context: ChannelHandlerContext) {
        guard phase == .open else { return }
        let now = NIODeadline.now()
        // Nothing may follow our end frame: the peer closes once it has both ends, and bytes
        // arriving after that would make its kernel reset the connection under our unread data.
        if !sentEnd && now - lastSent >= options.keepaliveInterval.timeAmount && context.channel.isWritable {
            var ping = context.channel.allocator.buffer(capacity: TCPFrame.headerSize)
            TCPFrame.writeControl(.ping, into: &ping)
            context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
            lastSent = now
        }
        guard !readPaused, context.channel.isWritable else {
            // Paused, we are not reading what the peer sends. Unwritable, our data (and pings)
            // wait behind a slow reader; the kernel's TCP_USER_TIMEOUT still drops a dead peer.
            lastReceived = now
            return
        }
        let silent = now - lastReceived
        if silent > options.deadPeerTimeout.timeAmount {
            close(context: context, TransportError(.timedOut, "the peer sent nothing for \(silent.nanoseconds / 1_000_000) ms (dead_peer_timeout \(options.deadPeerTimeout.configText))"))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase == .awaitingPreface || phase == .open else { return }
        var bytes = unwrapInboundIn(data)
        lastReceived = .now()
        if cumulation == nil {
            cumulation = bytes
        } else {
            cumulation!.writeBuffer(&bytes)
        }
        processFrames(context: context)
    }

    private func processFrames(context: ChannelHandlerContext) {
        guard var buffer = cumulation else { return }
        cumulation = nil
        defer {
            if buffer.readableBytes > 0 && phase != .closed {
                buffer.discardReadBytes()
                cumulation = buffer
            }
        }
        while phase == .awaitingPreface || phase == .open {
            let frame: TCPFrame?
            do {
                frame = try decoder.next(from: &buffer)
            } catch {
                let kind: TransportError.Code = error.description.contains("exceeds") ? .messageTooLarge : .protocolViolation
                close(context: context, TransportError(kind, "\(transportName) link: \(error.description)"))
                return
            }
            if phase == .awaitingPreface && decoder.sawPreface { open(context: context) }
            guard let frame else { return }
            switch frame {
            case .envelope(let payload):
                let envelope: Envelope
                do {
                    envelope = try Envelope(serializedBytes: payload.readableBytesSpan)
                } catch {
                    close(context: context, TransportError(.protocolViolation, "\(transportName) link: an envelope did not decode: \(error)"))
                    return
                }
                if bridge?.deliver(envelope, wireBytes: payload.readableBytes + TCPFrame.headerSize) == true && !readPaused {
                    readPaused = true
                    setAutoRead(false, context: context)
                }
            case .end:
                receivedEnd = true
                bridge?.finishReading()
                if endWritten { context.close(promise: nil) }
            case .ping, .pong:
                // Liveness only (lastReceived is already updated); pongs are accepted from older peers.
                break
            }
        }
    }

    private func open(context: ChannelHandlerContext) {
        guard let identity else { return }
        phase = .open
        prefaceTimeout?.cancel()
        let bridge = LinkBridge(sink: self, eventLoop: context.eventLoop, limits: options.bridgeLimits, framePrefix: TCPFrame.writeHeader)
        self.bridge = bridge
        let stream = bridge.meshStream(peer: identity)
        switch role {
        case .accepted(let accept): accept(stream)
        case .dialled(let promise, _): promise.succeed(stream)
        }
    }

    /// Pauses or resumes reading the socket (the consumer's backpressure).
    private func setAutoRead(_ on: Bool, context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(.autoRead, value: on)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let failure: TransportError
        if let error = error as? TLSHandshakeError {
            failure = TransportError(.handshakeFailed, "TLS handshake refused: \(error.reason)", underlying: error)
        } else if let error = error as? TransportError {
            failure = error
        } else {
            failure = TransportError(.linkClosed, "the connection failed: \(error)", underlying: error)
        }
        close(context: context, failure)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = failure ?? TransportError(.linkClosed, receivedEnd ? "the link closed" : "the connection to the peer was lost")
        finish(error)
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is GracefulCloseEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        promise?.succeed()
        guard phase == .open, let bridge else {
            close(context: context, TransportError(.shutDown, "the transport is shutting down"))
            return
        }
        // Queued envelopes go out, then the end frame; the connection closes once that is written.
        receivedEnd = true
        bridge.finishReading()
        bridge.finishWriting()
    }

    /// Ends everything with `error`: the dialler's promise, the bridge, the timers, the connection.
    private func close(context: ChannelHandlerContext, _ error: TransportError) {
        if failure == nil { failure = error }
        finish(error)
        context.close(promise: nil)
    }

    private func finish(_ error: TransportError) {
        guard phase != .closed else { return }
        let wasOpen = phase == .open
        phase = .closed
        timer?.cancel()
        prefaceTimeout?.cancel()
        cumulation = nil
        if wasOpen {
            bridge?.fail(error)
        } else if case .dialled(let promise, _) = role {
            promise.fail(error)
        }
    }

    // MARK: LinkSink

    func send(_ messages: [OutboundMessage]) {
        guard phase == .open, let context else { return }
        // Small messages are gathered into one buffer (TLS then seals them in one record);
        // a large one goes out as the buffer it was serialized into, its header in its headroom.
        var out: [ByteBuffer] = []
        var gathering = false
        var payloadBytes = 0
        for var message in messages {
            payloadBytes += message.payloadCount
            if message.buffer.readableBytes >= Self.writeThroughBytes {
                out.append(message.buffer)
                gathering = false
            } else if gathering {
                out[out.count - 1].writeBuffer(&message.buffer)
            } else {
                var gathered = context.channel.allocator.buffer(capacity: max(message.buffer.readableBytes, 16 * 1024))
                gathered.writeBuffer(&message.buffer)
                out.append(gathered)
                gathering = true
            }
        }
        guard let last = out.popLast() else { return }
        // The bridge hears the bytes are gone once the last buffer is written: its backpressure.
        let promise = context.eventLoop.makePromise(of: Void.self)
        let bridge = bridge
        promise.futureResult.whenComplete { _ in bridge?.sent(payloadBytes) }
        lastSent = .now()
        for buffer in out { context.write(wrapOutboundOut(buffer), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(last), promise: promise)
    }

    /// From this size a message is written as its own buffer rather than copied into the batch.
    static let writeThroughBytes = 8 * 1024

    func finishSending() {
        guard phase == .open, let context, !sentEnd else { return }
        sentEnd = true
        var end = context.channel.allocator.buffer(capacity: TCPFrame.headerSize)
        TCPFrame.writeControl(.end, into: &end)
        // Close only once the end frame is on the wire and the peer's end has arrived: closing
        // with our data still queued would lose it (and reset the peer).
        context.writeAndFlush(wrapOutboundOut(end)).assumeIsolated().whenComplete { _ in
            self.endWritten = true
            if self.receivedEnd { context.close(promise: nil) }
        }
    }

    func abortLink() {
        guard let context else { return }
        close(context: context, TransportError(.linkClosed, "the link was aborted by this node"))
    }

    func inboundConsumed(_ bytes: Int) {
        guard readPaused, let context else { return }
        readPaused = false
        // Frames already buffered come first, then the socket.
        processFrames(context: context)
        if !readPaused { setAutoRead(true, context: context) }
    }
}

@available(*, unavailable)
extension TCPLinkHandler: Sendable {}
