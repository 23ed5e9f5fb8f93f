public import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AgentFlowHTTP
import Hummingbird
public import Logging
import NIOCore
import AgentFlowSTUN
import ServiceLifecycle
import UnixSignals

/// The signal server, assembled from its config: the REST API (Hummingbird),
/// the eviction sweeper and the STUN responder, run as one service group that
/// shuts down gracefully on SIGTERM or SIGINT.
///
/// ```swift
/// let config = try ConfigLoader.loadSignal(file: "signal.yml", environment: ProcessInfo.processInfo.environment)
/// try await SignalServer(config: config, logger: logger).run()
/// ```
public struct SignalServer: Sendable {
    /// Where the server ended up listening (ports resolved when 0 was asked for).
    public struct BoundAddresses: Sendable {
        public var http: HostPort
        public var stun: HostPort?
    }

    public let config: SignalConfig
    public let registry: SignalRegistry
    let logger: Logger

    /// Builds the server and its store (`store.kind`). Throws when the store cannot start (Redis unreachable).
    public init(config: SignalConfig, logger: Logger, store: (any NodeRegistryStore)? = nil) throws {
        self.config = config
        self.logger = logger
        let store = try store ?? Self.makeStore(config.store, ttl: config.registry.ttl.duration)
        registry = SignalRegistry(store: store, settings: config.registry, stunPort: config.stun.enabled ? config.stun.listen.port : nil)
    }

    static func makeStore(_ settings: SignalConfig.StoreSettings, ttl: Duration) throws -> any NodeRegistryStore {
        switch settings.kind {
        case .memory: MemoryRegistryStore()
        case .redis: try RedisRegistryStore(url: settings.redisURL, keyPrefix: settings.redisKeyPrefix, ttl: ttl)
        }
    }

    /// Runs until SIGTERM/SIGINT, or until the calling task is cancelled (both graceful). `onListening` is
    /// called once both listeners are bound.
    public func run(
        handleSignals: Bool = true, onListening: @escaping @Sendable (BoundAddresses) async -> Void = { _ in }
    ) async throws {
        let openAPI = try Self.openAPIDocument()
        let router = SignalRoutes.router(registry: registry, config: config, openAPIDocument: openAPI)
        let bound = BoundAddressCollector(expectingSTUN: config.stun.enabled) { http, stun in
            await onListening(BoundAddresses(http: http, stun: stun))
        }
        let httpHost = config.http.listen.host
        let idle = config.http.idleTimeout.duration.components
        let app = Application(
            router: HEADAsGET(router),
            server: .loopBoundHTTP1(configuration: .init(idleTimeout: .nanoseconds(idle.seconds * 1_000_000_000 + idle.attoseconds / 1_000_000_000))),
            configuration: .init(address: .hostname(httpHost, port: config.http.listen.port), serverName: "agentflow-signal"),
            onServerRunning: { channel in
                await bound.http(HostPort(host: httpHost, port: channel.localAddress?.port ?? 0))
            },
            logger: logger)
        var services: [any Service] = [app, EvictionSweeper(registry: registry, logger: logger)]
        if config.stun.enabled {
            let stunHost = config.stun.listen.host
            let rfc5780 = config.stun.alternate.flatMap { alternate in
                STUNAddress(ip: config.stun.listen.host, port: UInt16(config.stun.listen.port))
                    .flatMap { primary in STUNAddress(ip: alternate.host, port: UInt16(alternate.port)).map { RFC5780Addresses(primary: primary, alternate: $0) } }
            }
            services.append(STUNService(
                listen: config.stun.listen, alternate: rfc5780 == nil ? nil : config.stun.alternate,
                responder: STUNBindingResponder(registry: registry, rfc5780: rfc5780), metrics: registry.metrics, logger: logger,
                onBound: { [registry] port in
                    registry.boundSTUNPort.withLock { $0 = port }
                    await bound.stun(HostPort(host: stunHost, port: port))
                }))
        }
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
            logger: logger))
        logger.info("signal server starting", metadata: ["http": "\(config.http.listen)", "store": "\(config.store.kind.rawValue)", "stun": "\(config.stun.enabled ? config.stun.listen.description : "off")"])
        if config.auth.token == nil {
            logger.warning("no auth.token: the API is open to anyone who can reach \(config.http.listen) (allowed only on loopback)")
        }
        // Cancelling the caller's task shuts down gracefully, like SIGTERM: in-flight requests finish.
        try await withTaskCancellationHandler {
            try await group.run()
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
        logger.info("signal server stopped")
    }

    /// The OpenAPI document compiled into the server (docs/signal-openapi.yaml,
    /// embedded by scripts/embed-openapi so the binary needs no file beside it).
    public static func openAPIDocument() throws -> [UInt8] {
        // A multi-line literal ends without the file's last newline.
        Array((OpenAPIDocument.yaml + "\n").utf8)
    }
}

/// Calls back once every listener has reported its bound address.
actor BoundAddressCollector {
    private var httpAddress: HostPort?
    private var stunAddress: HostPort?
    private let expectingSTUN: Bool
    private let callback: @Sendable (HostPort, HostPort?) async -> Void
    private var fired = false

    init(expectingSTUN: Bool, callback: @escaping @Sendable (HostPort, HostPort?) async -> Void) {
        self.expectingSTUN = expectingSTUN
        self.callback = callback
    }

    func http(_ address: HostPort) async {
        httpAddress = address
        await fireIfReady()
    }

    func stun(_ address: HostPort) async {
        stunAddress = address
        await fireIfReady()
    }

    private func fireIfReady() async {
        guard !fired, let httpAddress, !expectingSTUN || stunAddress != nil else { return }
        fired = true
        await callback(httpAddress, stunAddress)
    }
}
