public import AgentFlowCore
public import AgentFlowMesh
public import AgentFlowCluster
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AgentFlowHTTP
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
    /// The cluster view and event flow (publish here to tell every master).
    public let cluster: ClusterNode
    /// Host status, tasks, alerts; the actions commands run here.
    public let monitor: LocalMonitor
    public let commands: CommandRouter
    let logger: Logger
    let metricsRegistry: PrometheusCollectorRegistry
    private let apiBound = BoundAddress()
    /// The node's transports, for credential reloads.
    private let transports: [any Transport]

    /// Builds the modules config names. Throws when one cannot be built
    /// (for example, a certificate file that does not load).
    public init(config: MasterConfig, logger: Logger, metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) throws {
        self.config = config
        self.logger = logger
        self.metricsRegistry = metricsRegistry
        transports = try zip(config.transport.modules, config.transport.listeners).map { module, listen in
            try module.make(context: TransportContext(localNodeID: config.node.id, listenAddress: listen, security: config.security, logger: logger))
        }
        let transportNames = config.transport.modules.map(\.name)
        let discovery = try config.discovery.module.make(context: DiscoveryContext(
            localNodeID: config.node.id, dataDirectory: config.node.dataDirectory, logger: logger, transports: transportNames))
        let incarnation = Self.nextIncarnation(dataDirectory: config.node.dataDirectory, logger: logger)
        let identity = LocalIdentity(
            nodeID: config.node.id, displayName: config.node.displayName, clusterName: config.node.clusterName, incarnation: incarnation,
            transports: transportNames, advertised: [], labels: config.node.labels)
        let settings = config.cluster
        let configured = config.transport.advertisedEndpoints
        let meshOptions = MeshOptions(config.mesh, dataDirectory: config.node.dataDirectory)
        let usesTLS = !config.security.isPlaintext
        let transports = transports
        cluster = ClusterNode(
            localID: config.node.id, incarnation: incarnation,
            options: ClusterOptions(retainedEvents: settings.retainedEvents, syncInterval: settings.syncInterval.duration,
                                    hopLimit: UInt32(settings.hopLimit), recentLogLines: settings.recentLogLines,
                                    announceInterval: settings.announceInterval.duration, graftTimeout: settings.graftTimeout.duration),
            commands: .init(allowed: Set(settings.allowedActions), known: LocalMonitor.actions),
            logger: logger
        ) { protocols, effects in
            MeshNode(
                identity: identity, transports: transports, discovery: discovery, options: meshOptions,
                protocols: protocols, effects: effects, usesTLS: usesTLS, logger: logger,
                advertise: { bound in
                    // A transport with advertised addresses in config announces those; the others, what they bound.
                    let mine = configured.filter { $0.transport == bound.transport }
                    return mine.isEmpty ? Self.advertisable(bound.address).map { DiscoveredEndpoint(transport: bound.transport, address: $0) } : mine
                })
        }
        mesh = cluster.mesh
        commands = cluster.commands
        monitor = LocalMonitor(
            cluster: cluster, interval: settings.monitorInterval.duration, diskPaths: settings.diskPaths,
            rules: settings.alerts.map(Self.rule), tasks: settings.tasks.map(Self.task), logger: logger)
    }

    /// Where the local API listens, once bound.
    public func apiAddress() async throws -> HostPort { try await apiBound.value() }

    /// Runs until SIGTERM/SIGINT (when `handleSignals`), `shutdown`, or
    /// cancellation of the calling task: all graceful (Goodbye on every
    /// link, deregistration from the signal server).
    public func run(handleSignals: Bool = true) async throws {
        let api = MasterAPI(mesh: mesh, cluster: cluster, monitor: monitor, commands: commands, commandTimeout: config.cluster.commandTimeout.duration,
                            token: config.api.token, metricsRegistry: metricsRegistry)
        let listen = config.api.listen
        let bound = apiBound
        let app = Application(
            router: HEADAsGET(api.router()),
            server: .masterHTTP(dashboard: api.dashboard(keepalive: config.mesh.pingInterval.duration)),
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "agentflow-master"),
            onServerRunning: { channel in
                let address = HostPort(host: listen.host, port: channel.localAddress?.port ?? listen.port)
                bound.settle(.success(address))
            },
            logger: logger)
        var certificateWatch: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if case .mutualTLS(let files) = config.security {
            certificateWatch.append(.init(service: CertificateExpiryService(files: files, nodeID: config.node.id, mesh: mesh, logger: logger)))
            certificateWatch.append(.init(service: CredentialReloadService(files: files, transports: transports, mesh: mesh, logger: logger)))
        }
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: app), .init(service: MeshService(mesh: mesh)), .init(service: ClusterService(cluster: cluster, monitor: monitor)),
                .init(service: ProbeService(config: config, mesh: mesh, logger: logger), successTerminationBehavior: .ignore),
            ] + certificateWatch,
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

extension MasterNode {
    /// This run's incarnation: larger than every earlier run's, even if the
    /// clock went back (the last one is kept in `<data_dir>/incarnation`), so
    /// peers never take this run's events for stale ones.
    static func nextIncarnation(dataDirectory: String, logger: Logger) -> UInt64 {
        let file = PathText.join(dataDirectory, "incarnation")
        let last = (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { UInt64($0.trimmingWhitespace) } ?? 0
        let now = UInt64(max(0, unixMicros()))
        let next = max(last + 1, now)
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try String(next).write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            logger.warning("cannot record this run's incarnation in \(file): \(error); ordering across restarts relies on the clock")
        }
        return next
    }

    static func rule(_ settings: ClusterSettings.AlertSettings) -> AlertRule {
        let severity: Agentflow_Mesh_V1_AlertSeverity = switch settings.severity {
        case "info": .info
        case "critical": .critical
        default: .warning
        }
        return AlertRule(id: settings.id, metric: settings.metric, above: settings.above, below: settings.below,
                         holdFor: settings.holdFor.duration, severity: severity, summary: settings.summary)
    }

    static func task(_ settings: ClusterSettings.TaskSettings) -> TaskSpec {
        TaskSpec(name: settings.name, command: settings.command, restart: TaskSpec.RestartPolicy(rawValue: settings.restart) ?? .never,
                 autostart: settings.autostart, restartDelay: settings.restartDelay.duration, maxLogLinesPerSecond: settings.maxLogLinesPerSecond)
    }
}

/// Cluster upkeep as a service: command actions and the local monitor (sampler, tasks).
struct ClusterService: Service {
    let cluster: ClusterNode
    let monitor: LocalMonitor

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await cluster.run(actions: monitor) }
            group.addTask { await monitor.run() }
            try? await gracefulShutdown()
            group.cancelAll()
        }
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
