import AgentFlowCore
import AgentFlowSTUN
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The UDP side of the signal server: a NIO datagram channel feeding
/// `STUNBindingResponder`, for the server's whole life.
struct STUNService: Service {
    let listen: HostPort
    let responder: STUNBindingResponder
    let metrics: SignalMetrics
    let logger: Logger
    let onBound: @Sendable (Int) async -> Void

    func run() async throws {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: listen.host, port: listen.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        let port = channel.channel.localAddress?.port ?? listen.port
        logger.info("STUN listening", metadata: ["address": "\(listen.host):\(port)", "protocol": "udp"])
        await onBound(port)
        try await withGracefulShutdownHandler {
            try await channel.executeThenClose { inbound, outbound in
                for try await envelope in inbound {
                    guard let source = Self.stunAddress(envelope.remoteAddress) else { continue }
                    let bytes = Array(envelope.data.readableBytesView)
                    let (reply, outcome) = await responder.respond(to: bytes, from: source)
                    metrics.countSTUN(outcome.rawValue)
                    if let reply {
                        try await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: reply)))
                    }
                }
            }
        } onGracefulShutdown: {
            channel.channel.close(promise: nil)
        }
    }

    static func stunAddress(_ address: SocketAddress) -> STUNAddress? {
        guard let port = address.port, let ip = address.ipAddress else { return nil }
        return STUNAddress(ip: ip, port: UInt16(port))
    }
}
