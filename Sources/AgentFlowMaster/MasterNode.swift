public import AgentFlowCore
public import AgentFlowMesh
import Foundation
import Hummingbird
public import Logging
import NIOCore
import NIOPosix
public import Prometheus
import ServiceLifecycle
import UnixSignals

/// A master, assembled from its config: the transport and discovery backend
/// config names, the mesh over them, and the local HTTP API
/// (`GET /api/cluster/status`, `/metrics`, `/healthz`).
///
/// ```swift
/// let config = try ConfigLoader.loadMaster(file: path, environment: env, registry: registry)
/// try await MasterNode(config: config, logger: logger).run()
/// ```
public final class MasterNode: Sendable {
    public let config: MasterConfig
    public let mesh: MeshNode
    let logger: Logger
    let metricsRegistry: PrometheusCollectorRegistry
    private let apiBound = BoundAddress()

    /// Builds the modules config names. Throws when one cannot be built
    /// (for example, a certificate file that does not load).
    public init(config: MasterConfig, logger: Logger, metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                application: (any MeshApplication)? = nil) throws {
        self.config = config
        self.logger = logger
        self.metricsRegistry = metricsRegistry
        let transport = try config.transport.module.make(context: TransportContext(
            localNodeID: config.node.id, listenAddress: config.transport.listen, security: config.security, logger: logger))
        let discovery = try config.discovery.module.make(context: DiscoveryContext(
            localNodeID: config.node.id, dataDirectory: config.node.dataDirectory))
        let identity = LocalIdentity(
            nodeID: config.node.id, displayName: config.node.displayName, clusterName: config.node.clusterName,
            transport: config.transport.module.name, advertised: [], labels: config.node.labels)
        let configured = config.transport.advertise
        mesh = MeshNode(
            identity: identity, transport: transport, discovery: discovery,
            options: MeshOptions(config.mesh, dataDirectory: config.node.dataDirectory),
            application: application, usesTLS: !config.security.isPlaintext, logger: logger,
            advertise: { bound in configured.isEmpty ? Self.advertisable(bound) : configured })
    }

    /// Where the local API listens, once bound.
    public func apiAddress() async throws -> HostPort { try await apiBound.value() }

    /// Runs until SIGTERM/SIGINT (when `handleSignals`), `shutdown`, or
    /// cancellation of the calling task: all graceful (Goodbye on every
    /// link, deregistration from the signal server).
    public func run(handleSignals: Bool = true) async throws {
        if config.security.isPlaintext {
            logger.warning("tls.mode is off: links are neither encrypted nor authenticated; anyone who reaches \(config.transport.listen) can join")
        }
        let api = MasterAPI(mesh: mesh, token: config.api.token, metricsRegistry: metricsRegistry)
        let listen = config.api.listen
        let bound = apiBound
        let app = Application(
            router: api.router(),
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "agentflow-master"),
            onServerRunning: { channel in
                let address = HostPort(host: listen.host, port: channel.localAddress?.port ?? listen.port)
                bound.settle(.success(address))
            },
            logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: app), .init(service: MeshService(mesh: mesh))],
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
            logger: logger))
        do {
            try await withTaskCancellationHandler {
                try await group.run()
            } onCancel: {
                Task { await group.triggerGracefulShutdown() }
            }
        } catch {
            bound.settle(.failure(error))
            throw error
        }
        logger.info("master \(config.node.id) stopped")
    }

    /// The addresses to advertise for a bound listener: the address itself
    /// when concrete, else this host's non-loopback IPv4 addresses (loopback
    /// when there is none), so peers never get told to dial 0.0.0.0.
    static func advertisable(_ bound: HostPort) -> [HostPort] {
        guard bound.host == "0.0.0.0" || bound.host == "::" else { return [bound] }
        let addresses = ((try? System.enumerateDevices()) ?? []).compactMap { device -> String? in
            guard let address = device.address, address.protocol == .inet, let ip = address.ipAddress, !ip.hasPrefix("127.") else { return nil }
            return ip
        }
        let unique = Array(Set(addresses)).sorted()
        return (unique.isEmpty ? ["127.0.0.1"] : unique).prefix(8).map { HostPort(host: $0, port: bound.port) }
    }
}

/// The mesh as a ServiceLifecycle service: graceful shutdown says Goodbye.
struct MeshService: Service {
    let mesh: MeshNode

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await mesh.run()
        } onGracefulShutdown: {
            mesh.shutdown()
        }
    }
}
