import AgentFlowCore
import AgentFlowSignal
import ArgumentParser
import Foundation
import Logging

struct SignalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal",
        abstract: "Run the signal server: the public index masters register with (REST + STUN/UDP).",
        discussion: """
            With no --config, runs on defaults: REST on 127.0.0.1:7070, STUN on 127.0.0.1:3478, memory store, \
            no token (allowed on loopback only). Stops gracefully on SIGTERM or SIGINT.
            """
    )

    @Option(name: .long, help: "The signal server's YAML config (role: signal).")
    var config: String?

    @Option(name: .long, help: "Override log.level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    func run() async throws {
        var environment = ProcessInfo.processInfo.environment
        if let logLevel { environment["AGENTFLOW_SIGNAL__LOG__LEVEL"] = logLevel }
        let signalConfig = try loadConfigOrExit { () throws(ConfigError) in
            try ConfigLoader.loadSignal(file: config, environment: environment)
        }
        LineLogHandler.bootstrap(level: signalConfig.log.level)
        var logger = Logger(label: "signal")
        logger[metadataKey: "node"] = "signal"
        do {
            let server = try SignalServer(config: signalConfig, logger: logger)
            try await StartupPages.running { try await server.run() }
        } catch {
            logger.critical("signal server failed", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}
