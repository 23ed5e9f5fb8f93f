import AgentFlowCore
import ArgumentParser

/// `agentflow`: one executable, whose role comes from its subcommand and config.
struct AgentFlowCommand: AsyncParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
        commandName: executableName,
        abstract: "A secure peer-to-peer monitoring mesh: masters that talk directly, a tiny signal server that indexes them.",
        discussion: """
            Every process reads one YAML config (see examples/ and docs/configuration.md). \
            With no file, defaults run a local node. Environment variables override keys: \
            AGENTFLOW_<ROLE>__<KEY>__<SUBKEY>, e.g. AGENTFLOW_MASTER__MESH__MAX_PEERS=3.
            """,
        version: AgentFlowVersion.current,
        subcommands: [MasterCommand.self, DemoCommand.self, SignalCommand.self, CertsCommand.self, ConfigCommand.self, ModulesCommand.self, ProbeCommand.self]
        )
    }

    /// The name this binary was started as (`agentflow`, or a distribution's own, such as `agentflow-dns`).
    static var executableName: String {
        CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "agentflow") } ?? "agentflow"
    }
}
