public import NIOCore

/// The `tcp` transport's wire format, after TLS: each side first sends the
/// 8-byte preface `AGFLTCP1`, then frames of
/// `[u32 big-endian payload length][u8 kind][payload]`.
///
/// Kinds: 0 an `Envelope` (protobuf), 1 end of this side's stream (a clean
/// half-close), 2 keepalive ping (sent after an idle interval; needs no answer),
/// 3 pong (reserved; accepted and ignored). Anything else is a protocol
/// violation that closes the connection.
public enum TCPFrame: Equatable, Sendable {
    case envelope(ByteBuffer)
    case end
    case ping
    case pong

    public static let preface: [UInt8] = Array("AGFLTCP1".utf8)
    public static let headerSize = 5

    enum Kind: UInt8 {
        case envelope = 0, end = 1, ping = 2, pong = 3
    }

    /// Writes a control frame (no payload).
    static func writeControl(_ kind: Kind, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(kind.rawValue)
    }

    /// Writes an envelope frame's header into the headroom of a serialized message
    /// (`OutboundMessage`: 5 bytes in front of the payload, at the reader index).
    @Sendable static func writeHeader(into buffer: inout ByteBuffer, payloadCount: Int) {
        buffer.setInteger(UInt32(payloadCount), at: buffer.readerIndex)
        buffer.setInteger(Kind.envelope.rawValue, at: buffer.readerIndex + 4)
    }
}

/// Why bytes on a `tcp` link were refused.
public struct TCPFrameError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
}

/// Cuts frames out of received bytes; no I/O, so it is tested on its own.
public struct TCPFrameDecoder: Sendable {
    public let maxPayload: Int
    public private(set) var sawPreface = false

    public init(maxPayload: Int) { self.maxPayload = maxPayload }

    /// The next complete frame in `buffer` (consuming it), or nil when more
    /// bytes are needed. Throws on a wrong preface, an oversize length or an
    /// unknown kind: the stream cannot be resynchronised after any of them.
    public mutating func next(from buffer: inout ByteBuffer) throws(TCPFrameError) -> TCPFrame? {
        if !sawPreface {
            guard buffer.readableBytes >= TCPFrame.preface.count else {
                // Refuse early garbage as soon as it differs, without waiting for 8 bytes.
                if let prefix = buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes),
                   !TCPFrame.preface.starts(with: prefix) { throw TCPFrameError(description: "the peer did not open with the AgentFlow TCP preface") }
                return nil
            }
            guard buffer.readBytes(length: TCPFrame.preface.count) == TCPFrame.preface else {
                throw TCPFrameError(description: "the peer did not open with the AgentFlow TCP preface")
            }
            sawPreface = true
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
              let rawKind = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self) else { return nil }
        guard let kind = TCPFrame.Kind(rawValue: rawKind) else {
            throw TCPFrameError(description: "unknown frame kind \(rawKind)")
        }
        guard Int(length) <= maxPayload else {
            throw TCPFrameError(description: "a frame of \(length) bytes exceeds the limit of \(maxPayload) bytes")
        }
        if kind != .envelope && length != 0 {
            throw TCPFrameError(description: "a control frame carries \(length) payload bytes")
        }
        guard buffer.readableBytes >= TCPFrame.headerSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: TCPFrame.headerSize)
        switch kind {
        case .envelope: return .envelope(buffer.readSlice(length: Int(length))!)
        case .end: return .end
        case .ping: return .ping
        case .pong: return .pong
        }
    }
}
