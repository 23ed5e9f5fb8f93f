public import AgentFlowCore
public import AgentFlowTransportKit
public import Logging
public import CoreMetrics
import NIOCore

/// The `tcp` transport: envelopes as length-prefixed frames over TCP, behind
/// the shared OpenSSL mTLS. The leanest socket transport; for peers that need
/// no gRPC interoperability. ALPN `agentflow-tcp/1`.
public final class TCPTransport: SocketTransport {
    public static let alpn = "agentflow-tcp/1"
    public let name = TCPTransportModule.name
    public let core: SocketTransportCore

    public init(listenAddress: HostPort, security: TransportSecurity, options: SocketLinkOptions = .defaults,
                logger: Logger = Logger(label: "agentflow.tcp"), metrics: (any MetricsFactory)? = nil) throws {
        let linkSecurity = try LinkSecurity(security, alpn: [Self.alpn], handshakeTimeout: options.handshakeTimeout, transport: TCPTransportModule.name, logger: logger)
        core = SocketTransportCore(
            name: TCPTransportModule.name, listenAddress: listenAddress, options: options, security: linkSecurity,
            linkProtocol: TCPLinkProtocol(options: options, usesTLS: !linkSecurity.isPlaintext), logger: logger, metrics: metrics)
    }
}

struct TCPLinkProtocol: LinkProtocol {
    let options: SocketLinkOptions
    let usesTLS: Bool

    func configureAccepted(_ channel: any Channel, accept: @escaping @Sendable (MeshStream) -> Void) throws {
        try channel.pipeline.syncOperations.addHandler(
            TCPLinkHandler(role: .accepted(accept), usesTLS: usesTLS, options: options, transportName: TCPTransportModule.name))
    }

    func configureDialled(_ channel: any Channel, address: HostPort, expectedPeer: NodeID?) throws -> EventLoopFuture<MeshStream> {
        let promise = channel.eventLoop.makePromise(of: MeshStream.self)
        try channel.pipeline.syncOperations.addHandler(
            TCPLinkHandler(role: .dialled(promise, expectedPeer: expectedPeer), usesTLS: usesTLS, options: options, transportName: TCPTransportModule.name))
        return promise.futureResult
    }
}

/// Registers the TCP framing transport as `tcp`.
public enum TCPTransportModule: TransportModule {
    public typealias Options = SocketLinkOptions
    public static let name = "tcp"
    public static let summary = "length-prefixed envelopes over TCP with OpenSSL mTLS (lean, AgentFlow peers only)"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> SocketLinkOptions {
        try SocketLinkOptions.decode(from: section)
    }

    public static func makeTransport(options: SocketLinkOptions, context: TransportContext) throws -> any Transport {
        try TCPTransport(listenAddress: context.listenAddress, security: context.security, options: options,
                         logger: context.logger)
    }
}
