public import AgentFlowCore
import ArgumentParser
import Foundation

/// The whole `agentflow` command line, driven by a registry of modules.
///
/// `agentflow` itself is this with ``AgentFlowModules/standard``. A third-party
/// package builds its own distribution the same way and gets every subcommand
/// (`master`, `signal`, `demo`, `certs`, `config check`, `modules`), each of
/// which sees exactly the modules it was given:
///
/// ```swift
/// // Sources/agentflow-dns/main.swift
/// import AgentFlowCLI
///
/// var modules = AgentFlowModules.standard
/// modules.register(discovery: DNSDiscoveryModule.self)
/// await AgentFlowCLI.main(modules)
/// ```
public enum AgentFlowCLI {
    /// The registry the running command was started with. A task-local, so
    /// the subcommands (static types chosen by the argument parser) read the
    /// registry of the call that started them and nothing global.
    @TaskLocal static var modules = AgentFlowModules.standard

    /// Parses the process's arguments (or `arguments`), runs the chosen
    /// subcommand with `modules`, and exits the process with its status.
    public static func main(_ modules: ModuleRegistry = AgentFlowModules.standard, arguments: [String]? = nil) async -> Never {
        await $modules.withValue(modules) {
            await AgentFlowCommand.main(arguments)
        }
        exit(0)
    }
}
