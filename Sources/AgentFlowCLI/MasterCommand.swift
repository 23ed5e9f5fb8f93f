import AgentFlowCore
import AgentFlowMaster
import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus

struct MasterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "master",
        abstract: "Run a master: a node of the mesh, with its local API (GET /api/cluster/status).",
        discussion: """
            With no --config, runs on defaults: the grpc transport on 0.0.0.0:50051 with mutual TLS from \
            ./agentflow-data/certs (make them with `agentflow certs`), the API on 127.0.0.1:8080. \
            Stops gracefully on SIGTERM or SIGINT: says Goodbye to its peers and leaves the signal server.
            """
    )

    @Option(name: .long, help: "The master's YAML config (role: master).")
    var config: String?

    @Option(name: .long, help: "Override log.level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    func run() async throws {
        var environment = ProcessInfo.processInfo.environment
        if let logLevel { environment["AGENTFLOW_MASTER__LOG__LEVEL"] = logLevel }
        let masterConfig = try loadConfigOrExit { () throws(ConfigError) in
            try ConfigLoader.loadMaster(file: config, environment: environment, registry: AgentFlowCLI.modules)
        }
        if case .mutualTLS(let files) = masterConfig.security {
            let missing = [files.caCertificateFile, files.certificateFile, files.privateKeyFile].filter { !FileManager.default.fileExists(atPath: $0) }
            if !missing.isEmpty {
                let certs = (files.certificateFile as NSString).deletingLastPathComponent
                FileHandle.standardError.write(Data("""
                    error: tls.mode is mtls but \(missing.joined(separator: ", ")) \(missing.count == 1 ? "does" : "do") not exist. Create them:
                      agentflow certs ca --dir ./agentflow-ca           # once per cluster; keep ca.key safe
                      agentflow certs node \(masterConfig.node.id) --ca-dir ./agentflow-ca --out \(certs)

                    """.utf8))
                throw ExitCode(1)
            }
        }
        LineLogHandler.bootstrap(level: masterConfig.log.level)
        var logger = Logger(label: "master")
        logger[metadataKey: "node"] = "\(masterConfig.node.id)"
        // One registry for the process: transports count handshake failures into it, /metrics renders it.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        do {
            let master = try MasterNode(config: masterConfig, logger: logger, metricsRegistry: registry)
            try await StartupPages.running { try await master.run() }
        } catch {
            logger.critical("master failed: \(error)")
            throw ExitCode(1)
        }
    }
}
