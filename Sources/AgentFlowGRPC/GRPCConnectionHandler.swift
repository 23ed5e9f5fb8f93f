import AgentFlowCore
import AgentFlowProto
import AgentFlowTLS
import AgentFlowTransportKit
import CNGHTTP2
import NIOCore
import SwiftProtobuf

/// gRPC over HTTP/2 on one connection, with nghttp2 doing the HTTP/2: the
/// server side accepts `P2PMesh/Connect` calls (each one a link); the client
/// side opens one call. Sits above TLS (ALPN `h2`), or directly on TCP as
/// h2c with prior knowledge when TLS is explicitly off.
///
/// Flow control is HTTP/2's: incoming DATA is credited back to the peer
/// (`nghttp2_session_consume`) only as the link's consumer takes messages,
/// so a slow reader stops its sender while PINGs still flow. Outgoing bytes
/// leave only while the channel is writable.
final class GRPCConnectionHandler: ChannelDuplexHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role {
        case server(accept: @Sendable (MeshStream) -> Void)
        case client(EventLoopPromise<MeshStream>, expectedPeer: NodeID?, authority: String)
    }

    private enum Phase { case awaitingTLS, awaitingPeerSettings, open, closing, closed }

    static let path = "/agentflow.mesh.v1.P2PMesh/Connect"
    static let maxStreamsPerConnection: UInt32 = 16
    static let maxHeaderBytes = 16 * 1024

    private let role: Role
    private let options: SocketLinkOptions
    private let transportName: String
    private let usesTLS: Bool
    private var session: HTTP2Session!
    private var phase: Phase
    private var streams: [Int32: GRPCStream] = [:]
    private var identity: PeerIdentity?
    private var context: ChannelHandlerContext?
    private var lastReceived = NIODeadline.now()
    private var timer: RepeatedTask?
    private var setupTimeout: Scheduled<Void>?
    private var failure: TransportError?
    private var pumping = false
    private var insideSession = false
    private var deferredCredit: [(Int32, Int)] = []

    var isClient: Bool { if case .client = role { true } else { false } }

    /// The stream window: large enough for one maximum-size message, so a
    /// message can always complete, and never smaller than 1 MiB.
    private var streamWindow: Int32 { Int32(clamping: max(1 << 20, options.maxMessageBytes + GRPCMessageDeframer.prefixSize + 16_384)) }

    init(role: Role, usesTLS: Bool, options: SocketLinkOptions, transportName: String) throws {
        self.role = role
        self.options = options
        self.transportName = transportName
        self.usesTLS = usesTLS
        self.phase = usesTLS ? .awaitingTLS : .awaitingPeerSettings
        self.session = nil
        self.session = try HTTP2Session(role: isClient ? .client : .server, delegate: self, manualWindowUpdates: true)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if !usesTLS && context.channel.isActive { begin(context: context, established: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A dial that never connected still answers its caller.
        finishAll(failure ?? TransportError(.connectionRefused, "the connection closed before the link was established"))
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if !usesTLS && timer == nil { begin(context: context, established: nil) }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let established = event as? TLSEstablished, phase == .awaitingTLS {
            phase = .awaitingPeerSettings
            begin(context: context, established: established)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// TLS is done (or off): check the peer and ALPN, send our SETTINGS (and,
    /// as a client, the call's HEADERS), and wait for the peer's SETTINGS.
    private func begin(context: ChannelHandlerContext, established: TLSEstablished?) {
        let remote = context.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
        let expected: NodeID? = if case .client(_, let expectedPeer, _) = role { expectedPeer } else { nil }
        do {
            identity = try LinkSecurity.admit(established, expectedPeer: expected, remoteAddress: remote, transport: transportName)
            if let established, established.alpn != "h2" {
                throw TransportError(.handshakeFailed, "\(remote) did not agree to HTTP/2 (ALPN \(established.alpn ?? "none"))")
            }
            try session.submitSettings([
                (Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), Self.maxStreamsPerConnection),
                (Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), UInt32(streamWindow)),
                (Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), UInt32(Self.maxHeaderBytes)),
            ])
            session.setLocalWindowSize(stream: 0, size: streamWindow * 4)
            if case .client(_, _, let authority) = role {
                let id = try session.submitRequest(headers: [
                    (":method", "POST"), (":scheme", usesTLS ? "https" : "http"), (":path", Self.path), (":authority", authority),
                    ("content-type", "application/grpc+proto"), ("te", "trailers"), ("user-agent", "agentflow/\(AgentFlowVersion.current)"),
                ])
                streams[id] = GRPCStream(id: id, connection: self, maxMessageBytes: options.maxMessageBytes)
            }
        } catch {
            close(context: context, Self.transportError(error))
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        setupTimeout = context.eventLoop.scheduleTask(in: options.handshakeTimeout.timeAmount) {
            let (handler, context) = loopBound.value
            guard handler.phase == .awaitingPeerSettings else { return }
            handler.close(context: context, TransportError(.timedOut, "the peer sent no HTTP/2 SETTINGS in time"))
        }
        lastReceived = .now()
        let interval = options.keepaliveInterval.timeAmount
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.keepalive(context: context)
        }
        pump()
    }

    private func keepalive(context: ChannelHandlerContext) {
        guard phase == .open || phase == .closing else { return }
        let silent = NIODeadline.now() - lastReceived
        if silent > options.deadPeerTimeout.timeAmount {
            close(context: context, TransportError(.timedOut, "the peer sent nothing for \(silent.nanoseconds / 1_000_000) ms (dead_peer_timeout \(options.deadPeerTimeout.configText))"))
        } else if silent >= options.keepaliveInterval.timeAmount {
            session.submitPing()
            pump()
        }
    }

    // MARK: Bytes in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase != .closed else { return }
        lastReceived = .now()
        let bytes = unwrapInboundIn(data)
        do {
            // Callbacks run inside; they may not re-enter nghttp2's send path (pump waits for this).
            insideSession = true
            defer { insideSession = false }
            try bytes.withUnsafeReadableBytes { try session.receive($0) }
            insideSession = false
            for (id, credit) in deferredCredit { session.consume(stream: id, bytes: credit) }
            deferredCredit.removeAll()
        } catch {
            close(context: context, TransportError(.protocolViolation, "\(transportName): the peer broke the HTTP/2 protocol: \(error)", underlying: error))
            return
        }
        pump()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump() }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Bytes out

    /// Moves nghttp2's pending output to the channel while it is writable.
    func pump() {
        // nghttp2 forbids producing output from inside its own callbacks; the caller pumps after.
        guard let context, !pumping, !insideSession, phase != .closed else { return }
        pumping = true
        defer { pumping = false }
        // Flush each chunk as it is written: a flush can make the channel writable again from
        // inside this loop (the nested pump is skipped), so writability is re-read every round.
        while context.channel.isWritable {
            var buffer = context.channel.allocator.buffer(capacity: 16_384)
            do {
                try session.drainOutput({ buffer.writeBytes($0) }, limit: 256 * 1024)
            } catch {
                close(context: context, TransportError(.protocolViolation, "\(transportName): \(error)", underlying: error))
                return
            }
            guard buffer.readableBytes > 0 else { break }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
        if phase == .closing && streams.isEmpty && !session.wantsWrite {
            phase = .closed
            finishAll(TransportError(.linkClosed, "the connection closed"))
            context.close(promise: nil)
        }
    }

    func dataAvailable(on stream: GRPCStream) {
        if stream.deferred {
            stream.deferred = false
            session.resumeData(stream: stream.id)
        }
        pump()
    }

    func consumed(_ bytes: Int, on stream: GRPCStream) {
        guard !insideSession else {
            // Credit granted from inside a callback waits until nghttp2 has returned.
            deferredCredit.append((stream.id, bytes))
            return
        }
        session.consume(stream: stream.id, bytes: bytes)
        pump()
    }

    // MARK: HTTP2SessionDelegate

    func http2BeginHeaders(stream id: Int32) {
        if let stream = streams[id] {
            stream.headers.removeAll()
            stream.headerBytes = 0
        } else if case .server = role, phase == .open || phase == .awaitingPeerSettings {
            streams[id] = GRPCStream(id: id, connection: self, maxMessageBytes: options.maxMessageBytes)
        }
    }

    func http2Header(stream id: Int32, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        guard let stream = streams[id] else { return }
        stream.headerBytes += name.count + value.count + 32
        guard stream.headerBytes <= Self.maxHeaderBytes else { return }
        stream.headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
    }

    func http2HeadersComplete(stream id: Int32, category: HTTP2Session.HeadersCategory, endStream: Bool) {
        guard let stream = streams[id] else { return }
        switch (role, category) {
        case (.server(let accept), .request):
            startCall(stream, accept: accept)
        case (.client, .response):
            stream.responseReceived = true
            let status = stream.header(named: ":status")
            let contentType = stream.header(named: "content-type") ?? ""
            if endStream {
                receivedTrailers(stream)
            } else if status != "200" || !contentType.hasPrefix("application/grpc") {
                failCall(stream, TransportError(.protocolViolation, "the peer answered HTTP \(status ?? "?") with content-type '\(contentType)', not a gRPC response"))
            }
        case (.client, .trailers):
            receivedTrailers(stream)
        default:
            break
        }
    }

    /// Server: checks a new call's request headers and answers it.
    private func startCall(_ stream: GRPCStream, accept: @Sendable (MeshStream) -> Void) {
        let contentType = stream.header(named: "content-type") ?? ""
        let rejection: (GRPCStatus, String, httpStatus: String)? =
            if stream.headerBytes > Self.maxHeaderBytes {
                (.resourceExhausted, "request headers exceed \(Self.maxHeaderBytes) bytes", "200")
            } else if !contentType.hasPrefix("application/grpc") {
                (.unknown, "content-type '\(contentType)' is not application/grpc", "415")
            } else if stream.header(named: ":method") != "POST" {
                (.unimplemented, "gRPC calls use POST", "405")
            } else if stream.header(named: ":path") != Self.path {
                (.unimplemented, "unknown method \(stream.header(named: ":path") ?? "?"); this server serves \(Self.path)", "200")
            } else if let encoding = stream.header(named: "grpc-encoding"), encoding != "identity" {
                (.unimplemented, "message compression '\(encoding)' is not supported", "200")
            } else {
                nil
            }
        if let (status, message, httpStatus) = rejection {
            try? session.submitResponse(stream: stream.id, headers: [
                (":status", httpStatus), ("content-type", "application/grpc"),
                ("grpc-status", String(status.rawValue)), ("grpc-message", GRPCStatus.percentEncode(message)),
            ], withData: false)
            streams[stream.id] = nil
            return
        }
        do {
            try session.submitResponse(stream: stream.id, headers: [(":status", "200"), ("content-type", "application/grpc+proto")], withData: true)
        } catch {
            session.resetStream(stream.id, errorCode: NGHTTP2_INTERNAL_ERROR.rawValue)
            streams[stream.id] = nil
            return
        }
        guard let context, let identity else { return }
        let bridge = LinkBridge(sink: stream, eventLoop: context.eventLoop, limits: options.bridgeLimits, framePrefix: GRPCMessageDeframer.writePrefix)
        stream.bridge = bridge
        accept(bridge.meshStream(peer: identity))
    }

    /// Client: the call's status arrived; the call is over.
    private func receivedTrailers(_ stream: GRPCStream) {
        let code = stream.header(named: "grpc-status").flatMap { Int($0) }
        let message = stream.header(named: "grpc-message").map(GRPCStatus.percentDecode) ?? ""
        stream.inboundEnded = true
        guard let bridge = stream.bridge else { return }
        if code == 0 {
            bridge.finishReading()
        } else {
            let status = code.map(String.init) ?? "missing"
            bridge.finishReading(error: TransportError(.linkClosed, "the peer ended the call with grpc-status \(status)\(message.isEmpty ? "" : ": \(message)")"))
            // A failed call is over both ways.
            bridge.fail(TransportError(.linkClosed, "the peer ended the call with grpc-status \(status)"))
            session.resetStream(stream.id, errorCode: NGHTTP2_CANCEL.rawValue)
        }
        // grpc-status 0 ends only the inbound half; our side finishes when its writer does.
    }

    func http2Data(stream id: Int32, bytes: UnsafeBufferPointer<UInt8>) {
        guard let stream = streams[id], let bridge = stream.bridge, !stream.inboundEnded else {
            session.consumeConnection(bytes: bytes.count)
            return
        }
        stream.deframer.append(bytes)
        do {
            while let message = try stream.deframer.next() {
                let envelope: Envelope
                do {
                    envelope = try Envelope(serializedBytes: message.readableBytesSpan)
                } catch {
                    failCall(stream, TransportError(.protocolViolation, "an envelope did not decode: \(error)"), status: .internal)
                    return
                }
                bridge.deliver(envelope, wireBytes: message.readableBytes + GRPCMessageDeframer.prefixSize)
            }
        } catch .tooLarge(let length) {
            failCall(stream, TransportError(.messageTooLarge, "the peer sent a message of \(length) bytes; the limit is \(options.maxMessageBytes)"), status: .resourceExhausted)
        } catch {
            failCall(stream, TransportError(.protocolViolation, "the peer sent a compressed message, but no compression was negotiated"), status: .internal)
        }
    }

    func http2EndStream(stream id: Int32) {
        guard let stream = streams[id], case .server = role, !stream.inboundEnded else { return }
        stream.inboundEnded = true
        stream.bridge?.finishReading()
    }

    func http2StreamClosed(stream id: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        if let bridge = stream.bridge {
            if !stream.inboundEnded {
                stream.inboundEnded = true
                bridge.finishReading(error: TransportError(.linkClosed, errorCode == 0 ? "the call ended before the peer finished it" : "the peer reset the call (HTTP/2 error \(errorCode))"))
            }
            bridge.fail(TransportError(.linkClosed, "the call has ended"))
        }
        if isClient, phase == .open {
            // One call per client connection: when it ends, so does the connection.
            phase = .closing
            session.submitGoAway(errorCode: NGHTTP2_NO_ERROR.rawValue)
        }
    }

    func http2Settings(ack: Bool) {
        guard !ack, phase == .awaitingPeerSettings, let context, let identity else { return }
        phase = .open
        setupTimeout?.cancel()
        guard case .client(let promise, _, _) = role, let stream = streams.values.first else { return }
        let bridge = LinkBridge(sink: stream, eventLoop: context.eventLoop, limits: options.bridgeLimits, framePrefix: GRPCMessageDeframer.writePrefix)
        stream.bridge = bridge
        promise.succeed(bridge.meshStream(peer: identity))
    }

    func http2GoAway(lastStreamID: Int32, errorCode: UInt32) {
        // Calls above lastStreamID were never processed; nghttp2 closes them. Ours continue to their end.
        if phase == .open { phase = .closing }
    }

    func http2ReadData(stream id: Int32, into buffer: UnsafeMutableBufferPointer<UInt8>) -> HTTP2Session.DataRead {
        guard let stream = streams[id] else { return .end(0, endStream: true) }
        let read = stream.readData(into: buffer)
        if case .end(_, endStream: false) = read {
            // Server: the call ends with trailers carrying its status.
            let (status, message) = stream.status ?? (.ok, "")
            var trailers = [("grpc-status", String(status.rawValue))]
            if !message.isEmpty { trailers.append(("grpc-message", GRPCStatus.percentEncode(message))) }
            try? session.submitTrailer(stream: id, headers: trailers)
            if phase == .closing && !stream.inboundEnded {
                // Shutting down: the client should stop sending (gRPC: RST_STREAM NO_ERROR after trailers).
                stream.inboundEnded = true
                stream.bridge?.finishReading()
                session.resetStream(id, errorCode: NGHTTP2_NO_ERROR.rawValue)
            }
            // Otherwise the call stays half-open: the client may finish sending, as on every transport.
        }
        return read
    }

    // MARK: Ending

    /// Ends one call with an error: trailers with `status` from a server,
    /// RST_STREAM from a client; the connection carries on.
    private func failCall(_ stream: GRPCStream, _ error: TransportError, status: GRPCStatus = .internal) {
        stream.inboundEnded = true
        stream.bridge?.fail(error)
        if isClient {
            session.resetStream(stream.id, errorCode: NGHTTP2_CANCEL.rawValue)
        } else {
            stream.outbound.clear()
            stream.outboundFinished = true
            stream.status = (status, error.message)
            dataAvailable(on: stream)
        }
        pump()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context: context, Self.transportError(error))
    }

    static func transportError(_ error: any Error) -> TransportError {
        if let error = error as? TLSHandshakeError {
            return TransportError(.handshakeFailed, "TLS handshake refused: \(error.reason)", underlying: error)
        }
        if let error = error as? TransportError { return error }
        return TransportError(.linkClosed, "the connection failed: \(error)", underlying: error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finishAll(failure ?? TransportError(.linkClosed, "the connection to the peer was lost"))
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is GracefulCloseEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        promise?.succeed()
        guard phase == .open else {
            close(context: context, TransportError(.shutDown, "the transport is shutting down"))
            return
        }
        // GOAWAY, then every call ends cleanly after its queued messages; the connection closes when all have.
        phase = .closing
        session.submitGoAway(errorCode: NGHTTP2_NO_ERROR.rawValue)
        for stream in streams.values {
            if !stream.inboundEnded {
                stream.inboundEnded = true
                stream.bridge?.finishReading()
            }
            stream.bridge?.finishWriting()
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .seconds(2)) {
            let (handler, context) = loopBound.value
            handler.close(context: context, TransportError(.shutDown, "the transport shut down"))
        }
        pump()
    }

    /// Ends one call at once: a client closes its connection (one call each),
    /// a server cancels the call and keeps serving the connection's others.
    func abort(_ stream: GRPCStream) {
        let error = TransportError(.linkClosed, "the link was aborted by this node")
        if isClient, let context {
            close(context: context, error)
        } else if streams[stream.id] === stream {
            failCall(stream, error, status: .cancelled)
        }
    }

    private func close(context: ChannelHandlerContext, _ error: TransportError) {
        if failure == nil { failure = error }
        finishAll(error)
        context.close(promise: nil)
    }

    private func finishAll(_ error: TransportError) {
        guard phase != .closed || !streams.isEmpty || timer != nil else { return }
        let wasSettingUp = phase == .awaitingTLS || phase == .awaitingPeerSettings
        phase = .closed
        timer?.cancel()
        timer = nil
        setupTimeout?.cancel()
        if wasSettingUp, case .client(let promise, _, _) = role {
            promise.fail(error)
        }
        let open = streams.values
        streams.removeAll()
        for stream in open { stream.bridge?.fail(error) }
    }
}

@available(*, unavailable)
extension GRPCConnectionHandler: Sendable {}
