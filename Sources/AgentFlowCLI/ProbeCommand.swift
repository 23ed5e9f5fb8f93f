import AgentFlowCore
import AgentFlowProbes
import ArgumentParser
import Foundation

/// `agentflow probe`: runs probes one-shot with a master's config and prints their reports.
struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Check this node's network: the signal server, its public address and NAT, whether the outside can reach it.",
        discussion: """
            Runs the named probes (default: every registered one, signal first) with the master config's \
            settings: the signal server from discovery.url, the node's secret from its data folder, the \
            P2P ports from transport.listen. Prints each report as text, or all as one JSON document \
            with --json. Exits 0 when every probe passed, 1 when one failed (its summary says why and \
            what to do) or the config is refused, 64 on a usage error. See docs/nat.md for reading the verdicts.
            """
    )

    @Argument(help: "Probes to run, by name (`agentflow modules` lists them).")
    var names: [String] = []

    @Option(name: .long, help: "The master's YAML config (role: master).")
    var config: String?

    @Option(name: .long, help: "A STUN server host:port for the stun probe (repeatable); replaces probes.stun.servers.")
    var server: [String] = []

    @Option(name: .long, help: "One probe's budget, e.g. 20s. Default: probes.timeout.")
    var timeout: String?

    @Option(name: .long, help: "The stun probe also measures the NAT's idle mapping lifetime, up to this long (e.g. 2m): slow.")
    var lifetime: String?

    @Flag(name: .long, help: "Print the reports as JSON.")
    var json = false

    func run() async throws {
        let registry = AgentFlowCLI.modules
        let masterConfig = try loadConfigOrExit { () throws(ConfigError) in
            try ConfigLoader.loadMaster(file: config, environment: ProcessInfo.processInfo.environment, registry: registry)
        }
        let order = ["signal", "stun", "reach"]
        let chosen = names.isEmpty
            ? order.filter { registry.probes[$0] != nil } + registry.probes.keys.filter { !order.contains($0) }.sorted()
            : names
        var configured = masterConfig.probes.modules
        for name in chosen where configured[name] == nil {
            guard let registration = registry.probes[name] else {
                let known = registry.probes.keys.sorted().joined(separator: ", ")
                throw ValidationError("no probe named '\(name)' in this build; registered: \(known.isEmpty ? "none" : known)")
            }
            // Not in this config: its defaults (a probe with required options says which, as config check would).
            configured[name] = try loadConfigOrExit { () throws(ConfigError) in
                try registration.configure(from: try ConfigSection.root(.empty).section("probes").section(name))
            }
        }
        var budget = masterConfig.probes.timeout.duration
        if let timeout {
            guard let parsed = ConfigDuration(configText: timeout) else { throw ValidationError("--timeout: expected a duration like 20s or 1m, got '\(timeout)'") }
            budget = parsed.duration
        }
        var lifetimeLimit: ConfigDuration?
        if let lifetime {
            guard let parsed = ConfigDuration(configText: lifetime), parsed.duration >= .seconds(1) else {
                throw ValidationError("--lifetime: expected a duration of at least 1s like 90s or 2m, got '\(lifetime)'")
            }
            lifetimeLimit = parsed
            // The measurement takes that long: give the probe room for it and its other tests.
            if timeout == nil { budget = max(budget, parsed.duration + .seconds(20)) }
        }
        var servers: [HostPort] = []
        for text in server {
            guard let parsed = HostPort(parsing: text) else { throw ValidationError("--server: expected host:port, got '\(text)'") }
            servers.append(parsed)
        }
        let context = ProbeContext(
            localNodeID: masterConfig.node.id, timeout: budget, dataDirectory: masterConfig.node.dataDirectory,
            discovery: masterConfig.discovery.module,
            listening: zip(masterConfig.transport.modules, masterConfig.transport.listeners).map { DiscoveredEndpoint(transport: $0.name, address: $1) },
            advertised: masterConfig.transport.advertisedEndpoints)

        var reports: [ProbeReport] = []
        for name in chosen {
            let configured = configured[name]!
            let probe: any Probe
            do {
                if name == STUNProbeModule.name, !servers.isEmpty || lifetimeLimit != nil {
                    var options = configured.decodedOptions as? STUNProbeModule.Options ?? .init()
                    if !servers.isEmpty { options.servers = servers }
                    if let lifetimeLimit { options.lifetime = lifetimeLimit }
                    probe = try STUNProbeModule.makeProbe(options: options, context: context)
                } else {
                    probe = try configured.make(context: context)
                }
                reports.append(try await probe.run())
            } catch {
                reports.append(ProbeReport(probe: name, outcome: .failed, summary: "could not run: \(error)"))
            }
            if !json { print(Self.text(reports.last!), terminator: "") }
        }
        if json {
            let object: [String: Any] = ["node_id": masterConfig.node.id.rawValue, "probes": reports.map(\.jsonObject)]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
        if reports.contains(where: { $0.outcome == .failed }) { throw ExitCode(1) }
    }

    static func text(_ report: ProbeReport) -> String {
        var text = "\(report.probe): \(report.outcome.rawValue) — \(report.summary)\n"
        let width = report.facts.map(\.name.count).max() ?? 0
        for fact in report.facts {
            text += "  \(fact.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(fact.value)\n"
        }
        return text + "\n"
    }
}

extension ProbeReport {
    /// `{"probe", "outcome", "summary", "facts": [{"name", "value"}]}`: facts
    /// stay a list, since a name may repeat (one `endpoint` per endpoint).
    var jsonObject: [String: Any] {
        ["probe": probe, "outcome": outcome.rawValue, "summary": summary, "facts": facts.map { ["name": $0.name, "value": $0.value] }]
    }
}
