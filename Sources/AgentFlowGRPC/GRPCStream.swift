import AgentFlowCore
import AgentFlowTransportKit
import NIOCore

/// One gRPC call (`P2PMesh/Connect`) on a connection: one link. Holds the
/// call's framed outgoing bytes until nghttp2's flow control lets them go,
/// and the deframer for incoming DATA. Loop-confined.
final class GRPCStream: LinkSink {
    let id: Int32
    /// Weak: the bridge (and so this stream) can outlive the connection's handler.
    weak var connection: GRPCConnectionHandler?
    var headers: [(String, String)] = []
    var headerBytes = 0
    var bridge: LinkBridge?
    var deframer: GRPCMessageDeframer
    /// Framed messages not yet taken by nghttp2.
    var outbound: ByteBuffer
    /// nghttp2 is waiting for data (the read callback answered "deferred").
    var deferred = false
    var outboundFinished = false
    /// The server's final status, sent as trailers once `outbound` is empty.
    var status: (GRPCStatus, String)?
    var inboundEnded = false
    var responseReceived = false

    init(id: Int32, connection: GRPCConnectionHandler, maxMessageBytes: Int) {
        self.id = id
        self.connection = connection
        self.deframer = GRPCMessageDeframer(maxMessageBytes: maxMessageBytes)
        self.outbound = ByteBufferAllocator().buffer(capacity: 0)
    }

    func header(named name: String) -> String? {
        headers.first(where: { $0.0 == name })?.1
    }

    // MARK: LinkSink (called by the bridge on the loop)

    func send(_ messages: [OutboundMessage]) {
        guard !outboundFinished else { return }
        for var message in messages {
            // Each carries its gRPC prefix already (`GRPCMessageDeframer.writePrefix`, in its headroom).
            if outbound.readableBytes == 0 {
                outbound = message.buffer  // nothing waiting: take the buffer as it is
            } else {
                outbound.writeBuffer(&message.buffer)
            }
        }
        // The bridge counted payload bytes; add the prefixes so `sent` balances as nghttp2 takes framed bytes.
        bridge?.sent(-messages.count * GRPCMessageDeframer.prefixSize)
        connection?.dataAvailable(on: self)
    }

    func finishSending() {
        guard !outboundFinished else { return }
        outboundFinished = true
        if status == nil { status = (.ok, "") }
        connection?.dataAvailable(on: self)
    }

    func inboundConsumed(_ bytes: Int) {
        connection?.consumed(bytes, on: self)
    }

    func abortLink() {
        connection?.abort(self)
    }

    /// Copies framed bytes for nghttp2's next DATA frame.
    func readData(into target: UnsafeMutableBufferPointer<UInt8>) -> HTTP2Session.DataRead {
        let count = min(target.count, outbound.readableBytes)
        if count > 0 {
            outbound.readWithUnsafeReadableBytes { source in
                target.baseAddress!.update(from: source.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count)
                return count
            }
            if outbound.readableBytes == 0 { outbound.clear() }
            bridge?.sent(count)
        }
        if outbound.readableBytes == 0 && outboundFinished {
            return .end(count, endStream: connection?.isClient ?? true)
        }
        if count == 0 {
            deferred = true
            return .deferred
        }
        return .bytes(count)
    }
}

@available(*, unavailable)
extension GRPCStream: Sendable {}
