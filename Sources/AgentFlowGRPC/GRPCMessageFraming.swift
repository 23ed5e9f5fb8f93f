public import NIOCore

/// gRPC's length-prefixed messages inside HTTP/2 DATA: `[u8 compressed]
/// [u32 big-endian length][message]`. DATA frame boundaries mean nothing, so
/// bytes accumulate until a whole message is there. No I/O.
public struct GRPCMessageDeframer: Sendable {
    public static let prefixSize = 5

    /// Writes the prefix (`[u8 compressed = 0][u32 length]`) into a message's headroom.
    @Sendable public static func writePrefix(into buffer: inout ByteBuffer, payloadCount: Int) {
        buffer.setInteger(UInt8(0), at: buffer.readerIndex)
        buffer.setInteger(UInt32(payloadCount), at: buffer.readerIndex + 1)
    }
    public let maxMessageBytes: Int
    private var buffer: ByteBuffer

    public init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
        self.buffer = ByteBufferAllocator().buffer(capacity: 0)
    }

    public enum Failure: Error, Equatable, Sendable {
        /// Carries the announced length.
        case tooLarge(Int)
        /// The compressed flag is set, but no compression was negotiated.
        case compressed
    }

    /// Adds received DATA bytes.
    public mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        buffer.writeBytes(bytes)
    }

    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next whole message (its bytes, without the prefix), or nil when more bytes are needed.
    public mutating func next() throws(Failure) -> ByteBuffer? {
        guard let flag = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self) else { return nil }
        guard flag == 0 else { throw .compressed }
        guard Int(length) <= maxMessageBytes else { throw .tooLarge(Int(length)) }
        guard buffer.readableBytes >= Self.prefixSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Self.prefixSize)
        let message = buffer.readSlice(length: Int(length))!
        if buffer.readableBytes == 0 {
            buffer.clear()
        } else if buffer.readerIndex > 65_536 {
            buffer.discardReadBytes()
        }
        return message
    }

    /// Bytes of an incomplete message waiting.
    public var bufferedBytes: Int { buffer.readableBytes }
}

/// gRPC status codes used on AgentFlow's error paths.
public enum GRPCStatus: Int, Sendable {
    case ok = 0, cancelled = 1, unknown = 2, invalidArgument = 3, deadlineExceeded = 4, notFound = 5
    case resourceExhausted = 8, unimplemented = 12, `internal` = 13, unavailable = 14, unauthenticated = 16

    /// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
    public static func percentEncode(_ message: String) -> String {
        var out = ""
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
            }
        }
        return out
    }

    public static func percentDecode(_ text: String) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
               let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
