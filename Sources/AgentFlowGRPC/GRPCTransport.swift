public import AgentFlowCore
public import AgentFlowTransportKit
public import Logging
public import CoreMetrics
import NIOCore

/// The `grpc` transport: real gRPC over HTTP/2 (nghttp2), so any standard
/// gRPC implementation can open a `P2PMesh/Connect` call to a master, behind
/// the shared OpenSSL mTLS with ALPN `h2`. With TLS explicitly off it speaks
/// h2c with prior knowledge. Each dialled link is its own connection; an
/// accepted connection may carry up to 16 concurrent calls, each a link.
public final class GRPCTransport: SocketTransport {
    public let name = GRPCTransportModule.name
    public let core: SocketTransportCore

    public init(listenAddress: HostPort, security: TransportSecurity, options: SocketLinkOptions = .defaults,
                logger: Logger = Logger(label: "agentflow.grpc"), metrics: (any MetricsFactory)? = nil) throws {
        let linkSecurity = try LinkSecurity(security, alpn: ["h2"], handshakeTimeout: options.handshakeTimeout, transport: GRPCTransportModule.name, logger: logger)
        core = SocketTransportCore(
            name: GRPCTransportModule.name, listenAddress: listenAddress, options: options, security: linkSecurity,
            linkProtocol: GRPCLinkProtocol(options: options, usesTLS: !linkSecurity.isPlaintext), logger: logger, metrics: metrics)
    }
}

struct GRPCLinkProtocol: LinkProtocol {
    let options: SocketLinkOptions
    let usesTLS: Bool

    func configureAccepted(_ channel: any Channel, accept: @escaping @Sendable (MeshStream) -> Void) throws {
        try channel.pipeline.syncOperations.addHandler(
            GRPCConnectionHandler(role: .server(accept: accept), usesTLS: usesTLS, options: options, transportName: GRPCTransportModule.name))
    }

    func configureDialled(_ channel: any Channel, address: HostPort, expectedPeer: NodeID?) throws -> EventLoopFuture<MeshStream> {
        let promise = channel.eventLoop.makePromise(of: MeshStream.self)
        let authority = address.description
        try channel.pipeline.syncOperations.addHandler(
            GRPCConnectionHandler(role: .client(promise, expectedPeer: expectedPeer, authority: authority), usesTLS: usesTLS,
                                  options: options, transportName: GRPCTransportModule.name))
        return promise.futureResult
    }
}

/// Registers the gRPC transport as `grpc`.
public enum GRPCTransportModule: TransportModule {
    public typealias Options = SocketLinkOptions
    public static let name = "grpc"
    public static let summary = "gRPC over HTTP/2 (nghttp2) with OpenSSL mTLS; any gRPC client can connect"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> SocketLinkOptions {
        try SocketLinkOptions.decode(from: section)
    }

    public static func makeTransport(options: SocketLinkOptions, context: TransportContext) throws -> any Transport {
        try GRPCTransport(listenAddress: context.listenAddress, security: context.security, options: options,
                          logger: context.logger)
    }
}
