import AgentFlowCore
import ArgumentParser
import Foundation

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Work with AgentFlow config files.",
        subcommands: [Check.self]
    )

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a config and print the effective config (file + environment + defaults).",
            discussion: """
                Exits 0 and prints the effective config as YAML (each value commented with where it came from) \
                when the config is usable; exits 1 with the key's path, the bad value and what is allowed when not. \
                With no FILE, checks the defaults of --role.
                """
        )

        @Argument(help: "The YAML config file. Omit to check the built-in defaults.")
        var file: String?

        @Option(help: "The role to check as (master, signal). Default: the file's `role:` key.")
        var role: String?

        @Flag(help: "Print nothing on success; only the exit code tells.")
        var quiet = false

        func run() async throws {
            var expectedRole: ConfigLoader.Role?
            if let role {
                guard let parsed = ConfigLoader.Role(rawValue: role) else {
                    throw ValidationError("--role must be one of: \(ConfigLoader.Role.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                expectedRole = parsed
            }
            if file == nil && expectedRole == nil {
                throw ValidationError("give a FILE, or --role to check the defaults of a role")
            }
            do {
                let (config, yaml) = try ConfigLoader.load(
                    file: file, role: expectedRole, environment: ProcessInfo.processInfo.environment,
                    registry: AgentFlowCLI.modules)
                if !quiet {
                    print("# effective \(config.role.rawValue) config\(file.map { " from \($0)" } ?? " (defaults)")")
                    print(yaml, terminator: "")
                    print("# ok")
                }
            } catch {
                FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

struct ModulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modules",
        abstract: "List the transports, discovery backends and probes this build registers."
    )

    func run() async throws {
        let registry = AgentFlowCLI.modules
        func list(_ title: String, _ entries: [(String, String)], default defaultName: String?) {
            print("\(title):")
            if entries.isEmpty { print("  (none)") }
            for (name, summary) in entries.sorted(by: { $0.0 < $1.0 }) {
                print("  \(name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(summary)\(name == defaultName ? " [default]" : "")")
            }
        }
        list("transports", registry.transports.values.map { ($0.name, $0.summary) }, default: registry.defaultTransport)
        list("discovery", registry.discoveries.values.map { ($0.name, $0.summary) }, default: registry.defaultDiscovery)
        list("probes", registry.probes.values.map { ($0.name, $0.summary) }, default: nil)
    }
}
