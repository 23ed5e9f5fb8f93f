public import AgentFlowCore
public import NIOCore
import SwiftProtobuf

/// One serialized envelope, with room in front for its transport's frame prefix.
///
/// The envelope is serialized straight into the buffer the transport sends:
/// the `tcp` frame header and the gRPC message prefix are both 5 bytes, so a
/// sink writes its prefix into the headroom and sends the buffer as it is — no
/// copy into a frame buffer, and no zero-filling before serializing.
public struct OutboundMessage: Sendable {
    /// Bytes reserved in front of the payload.
    public static let headroom = 5

    /// The headroom, then the serialized envelope (reader index at the headroom's start).
    public var buffer: ByteBuffer

    /// The serialized envelope's size, without the headroom.
    public var payloadCount: Int { buffer.readableBytes - Self.headroom }

    /// Serializes `envelope` after `headroom` zero bytes.
    public init(_ envelope: Envelope) throws {
        let bytes: HeadroomBytes = try envelope.serializedBytes()
        buffer = bytes.buffer
    }
}

/// What SwiftProtobuf serializes into: a `ByteBuffer` whose first `headroom`
/// bytes stay out of its view. `init(repeating: 0, count:)` — the only way the
/// serializer creates it — does not zero the payload: the serializer then writes
/// every byte of it (and checks that it did).
struct HeadroomBytes: SwiftProtobufContiguousBytes {
    var buffer: ByteBuffer

    init(repeating value: UInt8, count: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: OutboundMessage.headroom + count)
        buffer.writeRepeatingByte(0, count: OutboundMessage.headroom)
        if value == 0 {
            buffer.moveWriterIndex(forwardBy: count)
        } else {
            buffer.writeRepeatingByte(value, count: count)
        }
    }

    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        buffer = ByteBufferAllocator().buffer(capacity: OutboundMessage.headroom)
        buffer.writeRepeatingByte(0, count: OutboundMessage.headroom)
        buffer.writeBytes(sequence)
    }

    var count: Int { buffer.readableBytes - OutboundMessage.headroom }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes { try body(UnsafeRawBufferPointer(rebasing: $0.dropFirst(OutboundMessage.headroom))) }
    }

    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes { try body(UnsafeMutableRawBufferPointer(rebasing: $0.dropFirst(OutboundMessage.headroom))) }
    }
}
