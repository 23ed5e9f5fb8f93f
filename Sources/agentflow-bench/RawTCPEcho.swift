import NIOCore
import NIOPosix
import Synchronization
import AgentFlowTransportKit

/// The floor: plain NIO TCP on 127.0.0.1 with a 4-byte length prefix, no TLS,
/// no protobuf, no bridge. Streaming counts bytes at the server; ping-pong
/// echoes one frame at a time.
enum RawTCPEcho {
    /// Server side: counts frames; echoes frames whose first payload byte is 1.
    final class Server: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        var buffer = ByteBuffer()

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            buffer.writeBuffer(&bytes)
            var reply = context.channel.allocator.buffer(capacity: 0)
            while let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self), buffer.readableBytes >= 4 + Int(length) {
                let frame = buffer.readSlice(length: 4 + Int(length))!
                if frame.getInteger(at: frame.readerIndex + 4, as: UInt8.self) == 1 {
                    var copy = frame
                    reply.writeBuffer(&copy)
                }
            }
            buffer.discardReadBytes()
            if reply.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
        }
    }

    /// Client side: hands each echoed frame to a continuation.
    final class Client: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let replies: AsyncStream<Void>.Continuation
        var buffer = ByteBuffer()
        init(replies: AsyncStream<Void>.Continuation) { self.replies = replies }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            buffer.writeBuffer(&bytes)
            while let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self), buffer.readableBytes >= 4 + Int(length) {
                buffer.moveReaderIndex(forwardBy: 4 + Int(length))
                replies.yield()
            }
            buffer.discardReadBytes()
        }
    }

    static func withConnection<T>(_ body: (any Channel, AsyncStream<Void>) async throws -> T) async throws -> T {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { $0.pipeline.addHandler(Server()) }
            .bind(host: "127.0.0.1", port: 0).get()
        let (replies, continuation) = AsyncStream.makeStream(of: Void.self)
        let client = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { $0.pipeline.addHandler(Client(replies: continuation)) }
            .connect(host: "127.0.0.1", port: server.localAddress!.port!).get()
        defer {
            client.close(promise: nil)
            server.close(promise: nil)
        }
        return try await body(client, replies)
    }

    static func frame(size: Int, echo: Bool) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(size))
        buffer.writeInteger(UInt8(echo ? 1 : 0))
        buffer.writeRepeatingByte(0x78, count: size - 1)
        return buffer
    }

    static func stream(size: Int, seconds: Double) async throws -> (Double, Double) {
        try await withConnection { channel, replies in
            let frame = frame(size: size, echo: false)
            let start = ContinuousClock.now
            let deadline = start + .milliseconds(Int(seconds * 1000))
            var sent = 0
            while ContinuousClock.now < deadline {
                // 256 writes, one flush, then wait for the socket: the same batching the links do.
                for _ in 0..<255 { channel.write(frame, promise: nil) }
                try await channel.writeAndFlush(frame)
                sent += 256
            }
            try await channel.writeAndFlush(Self.frame(size: 8, echo: true))
            var iterator = replies.makeAsyncIterator()
            _ = await iterator.next()
            let elapsed = (ContinuousClock.now - start).seconds
            return (Double(sent) / elapsed, Double(sent * size) / elapsed / 1_000_000)
        }
    }

    static func pingPong(size: Int, count: Int, onLoop: Bool) async throws -> (p50: Double, p99: Double) {
        try await withConnection { channel, replies in
            try await withTaskExecutorPreference(onLoop ? EventLoopTaskExecutor.for(channel.eventLoop) : nil) {
                let frame = frame(size: size, echo: true)
                var iterator = replies.makeAsyncIterator()
                return try await timeRoundTrips(count: count) {
                    try await channel.writeAndFlush(frame)
                    _ = await iterator.next()
                }
            }
        }
    }
}
