public import AgentFlowCore
public import NIOCore
public import NIOPosix
public import Logging
import Synchronization
public import CoreMetrics

/// What a socket transport (`grpc`, `tcp`) adds on top of TLS: the handlers
/// that speak its wire protocol on one connection.
public protocol LinkProtocol: Sendable {
    /// Adds the protocol's handlers to an accepted connection (TLS, if on, is
    /// already first). Each link it establishes is passed to `accept`.
    func configureAccepted(_ channel: any Channel, accept: @escaping @Sendable (MeshStream) -> Void) throws
    /// Adds the protocol's handlers to a connection being dialled to `address`
    /// (before it connects); the future
    /// completes with the link once the peer has answered, or fails with a
    /// `TransportError` (a refused certificate, a wrong node, a timeout).
    func configureDialled(_ channel: any Channel, address: HostPort, expectedPeer: NodeID?) throws -> EventLoopFuture<MeshStream>
}

/// Asks a connection's protocol handler to end its links cleanly and close.
/// Sent with `triggerUserOutboundEvent` on graceful shutdown.
public struct GracefulCloseEvent: Sendable {
    public init() {}
}

/// The socket plumbing `grpc` and `tcp` share: bind and accept on SwiftNIO,
/// dial with a timeout, TLS first in every pipeline, live connections tracked
/// so shutdown can close them gracefully, links handed to the listen handler
/// each in its own task.
public final class SocketTransportCore: Sendable {
    public let name: String
    public let listenAddress: HostPort
    public let options: SocketLinkOptions
    public let security: LinkSecurity
    public let logger: Logger
    private let linkProtocol: any LinkProtocol
    private let group: any EventLoopGroup
    /// Where refused handshakes are counted; the process-wide factory unless given.
    private let metrics: any MetricsFactory

    private struct State {
        var serverChannel: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var shutDown = false
    }
    private let state = Mutex(State())
    private let bound = BoundAddress()

    public init(name: String, listenAddress: HostPort, options: SocketLinkOptions, security: LinkSecurity,
                linkProtocol: any LinkProtocol, logger: Logger, metrics: (any MetricsFactory)? = nil,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.metrics = metrics ?? MetricsSystem.factory
        self.name = name
        self.listenAddress = listenAddress
        self.options = options
        self.security = security
        self.linkProtocol = linkProtocol
        self.logger = logger
        self.group = group
    }

    public func listen(_ handler: @escaping @Sendable (MeshStream) async -> Void) async throws {
        let (streams, continuation) = AsyncStream.makeStream(of: MeshStream.self)
        let serverChannel: any Channel
        do {
            if state.withLock({ $0.shutDown }) { throw TransportError(.shutDown, "the \(name) transport is shut down") }
            serverChannel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(Self.tcpUserTimeout, value: Self.userTimeout(options))
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.setUpAccepted(channel, accept: { stream in continuation.yield(stream) })
                    }
                }
                .bind(host: listenAddress.host, port: listenAddress.port).get()
        } catch let error as TransportError {
            bound.settle(.failure(error))
            throw error
        } catch {
            let failure = TransportError(.bindFailed, "the \(name) transport cannot listen on \(listenAddress): \(error)", underlying: error)
            bound.settle(.failure(failure))
            throw failure
        }
        let port = serverChannel.localAddress?.port ?? listenAddress.port
        let shutDownAlready = state.withLock { state -> Bool in
            state.serverChannel = serverChannel
            return state.shutDown
        }
        bound.settle(.success(HostPort(host: listenAddress.host, port: port)))
        if shutDownAlready { serverChannel.close(promise: nil) }
        logger.info("\(name) transport listening on \(listenAddress.host):\(port)\(security.isPlaintext ? " (plaintext)" : " (mTLS)")")

        serverChannel.closeFuture.whenComplete { _ in continuation.finish() }
        await withTaskGroup(of: Void.self) { tasks in
            for await stream in streams {
                // On the link's own event loop: no thread hop per message (see EventLoopTaskExecutor).
                tasks.addTask(executorPreference: stream.executor) { await handler(stream) }
            }
        }
    }

    private func setUpAccepted(_ channel: any Channel, accept: @escaping @Sendable (MeshStream) -> Void) throws {
        let (shutDown, count) = state.withLock { ($0.shutDown, $0.connections.count) }
        if shutDown {
            channel.close(promise: nil)
            return
        }
        if count >= options.maxConnections {
            logger.warning("\(name): refusing a connection from \(channel.remoteAddress?.description ?? "?"): \(count) connections are open (max_connections \(options.maxConnections))")
            channel.close(promise: nil)
            return
        }
        track(channel)
        if let tls = try security.makeHandler(isServer: true) {
            try channel.pipeline.syncOperations.addHandler(tls)
        }
        try channel.pipeline.syncOperations.addHandler(LinkFailureLogger(transport: name, logger: logger, role: "accepted", metrics: metrics))
        try linkProtocol.configureAccepted(channel, accept: accept)
    }

    public func listeningAddress() async throws -> HostPort { try await bound.value() }

    public func connect(to address: HostPort, expectedPeer: NodeID?) async throws -> MeshStream {
        if state.withLock({ $0.shutDown }) { throw TransportError(.shutDown, "the \(name) transport is shut down") }
        // The handlers go in before the connection exists: bytes the peer sends at once
        // (its preface, its SETTINGS) must never reach a pipeline without them.
        let established = Mutex<EventLoopFuture<MeshStream>?>(nil)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(options.connectTimeout.timeAmount)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(Self.tcpUserTimeout, value: Self.userTimeout(options))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls = try self.security.makeHandler(isServer: false) {
                            try channel.pipeline.syncOperations.addHandler(tls)
                        }
                        try channel.pipeline.syncOperations.addHandler(LinkFailureLogger(transport: self.name, logger: self.logger, role: "dialled", metrics: self.metrics))
                        let future = try self.linkProtocol.configureDialled(channel, address: address, expectedPeer: expectedPeer)
                        established.withLock { $0 = future }
                    }
                }
                .connect(host: address.host, port: address.port).get()
        } catch let error as TransportError {
            throw error
        } catch {
            throw TransportError(.connectionRefused, "cannot connect to \(address) over \(name): \(error)", underlying: error)
        }
        track(channel)
        guard let future = established.withLock({ $0 }) else {
            channel.close(promise: nil)
            throw TransportError(.connectionRefused, "the link to \(address) over \(name) was not set up")
        }
        do {
            return try await future.get()
        } catch {
            channel.close(promise: nil)
            if let error = error as? TransportError { throw error }
            throw TransportError(.handshakeFailed, "the link to \(address) over \(name) failed: \(error)", underlying: error)
        }
    }

    public func beginGracefulShutdown() {
        let (server, connections) = state.withLock { state in
            state.shutDown = true
            return (state.serverChannel, Array(state.connections.values))
        }
        bound.settle(.failure(TransportError(.shutDown, "the \(name) transport shut down before listening")))
        server?.close(promise: nil)
        for connection in connections {
            connection.triggerUserOutboundEvent(GracefulCloseEvent(), promise: nil)
        }
    }

    /// Drops every connection at once, with no clean end on any link: what a
    /// killed process looks like to its peers (tests simulate crashes with it).
    /// The transport stays shut down.
    public func abortAllLinks() {
        let (server, connections) = state.withLock { state in
            state.shutDown = true
            return (state.serverChannel, Array(state.connections.values))
        }
        server?.close(promise: nil)
        for connection in connections { connection.close(promise: nil) }
    }

    /// TCP_USER_TIMEOUT: the kernel drops a connection whose sent data stays
    /// unacknowledged this long. It catches a dead peer even while backpressure
    /// keeps keepalive pings queued behind data.
    static let tcpUserTimeout = ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: 18))
    static func userTimeout(_ options: SocketLinkOptions) -> SocketOptionValue {
        // Never below 30 s: Linux applies it to zero-window probing too, and a peer
        // that is merely slow to read must not be dropped.
        SocketOptionValue(max(options.deadPeerTimeout.timeAmount.nanoseconds / 1_000_000, 30_000))
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLock { $0.connections[id] = channel }
        channel.closeFuture.whenComplete { _ in
            _ = self.state.withLock { $0.connections.removeValue(forKey: id) }
        }
    }

    /// Live connections (accepted and dialled).
    public var connectionCount: Int { state.withLock { $0.connections.count } }
}

/// A transport built on `SocketTransportCore`: conforming types only set up
/// their `core` (name, TLS, wire protocol); the `Transport` requirements come
/// from here.
public protocol SocketTransport: Transport {
    var core: SocketTransportCore { get }
}

extension SocketTransport {
    public func listen(_ handler: @escaping @Sendable (MeshStream) async -> Void) async throws { try await core.listen(handler) }
    public func listeningAddress() async throws -> HostPort { try await core.listeningAddress() }
    public func connect(to address: HostPort, expectedPeer: NodeID?) async throws -> MeshStream {
        try await core.connect(to: address, expectedPeer: expectedPeer)
    }
    public func beginGracefulShutdown() { core.beginGracefulShutdown() }
    public func reloadCredentials() throws { try core.security.reload() }
    /// Drops every link with no clean end, as a killed process would (tests).
    public func crash() { core.abortAllLinks() }
}
