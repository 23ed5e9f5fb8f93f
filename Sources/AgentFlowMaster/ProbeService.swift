import AgentFlowCore
import AgentFlowMesh
import Logging
import ServiceLifecycle

/// Runs the master's probes (`probes.run`) after `probes.initial_delay` and
/// then every `probes.interval`: the reports go to `/api/cluster/status`, and
/// their gist (public address, NAT class, dialable or not) to every peer.
/// A node that is not reachable from outside and advertises no forwarded port
/// gets a warning that says how to fix it.
struct ProbeService: Service {
    let config: MasterConfig
    let mesh: MeshNode
    let logger: Logger

    func run() async throws {
        let chosen = config.probes.run.compactMap { name in config.probes.modules[name].map { (name, $0) } }
        guard !chosen.isEmpty else { return }
        try? await cancelWhenGracefulShutdown {
            try await Task.sleep(for: config.probes.initialDelay.duration)
            var lastDialable: PeerReachability.Dialable?
            while !Task.isCancelled {
                let reports = await runRound(chosen)
                let reachability = Self.reachability(from: reports)
                mesh.setProbeResults(reports, reachability: reachability)
                if reachability.dialable != lastDialable { advise(reports, reachability) }
                lastDialable = reachability.dialable
                try await Task.sleep(for: config.probes.interval.duration)
            }
        }
    }

    private func runRound(_ chosen: [(String, ConfiguredProbe)]) async -> [ProbeReport] {
        let context = ProbeContext(
            localNodeID: config.node.id, timeout: config.probes.timeout.duration, dataDirectory: config.node.dataDirectory,
            discovery: config.discovery.module, listening: mesh.listening, advertised: config.transport.advertisedEndpoints)
        var reports: [ProbeReport] = []
        for (name, configured) in chosen {
            do {
                let report = try await configured.make(context: context).run()
                reports.append(report)
                logger.info("probe \(name): \(report.outcome.rawValue): \(report.summary)")
            } catch {
                reports.append(ProbeReport(probe: name, outcome: .failed, summary: "could not run: \(error)"))
                logger.warning("probe \(name) could not run: \(error)")
            }
        }
        return reports
    }

    /// The gist peers get: from `stun` (address, NAT classes) and `reach` (dialable).
    static func reachability(from reports: [ProbeReport]) -> PeerReachability {
        let stun = reports.first { $0.probe == "stun" && $0.outcome == .passed }
        let reach = reports.first { $0.probe == "reach" }
        let dialable: PeerReachability.Dialable = switch reach?.fact("reachable") {
        case "yes"?: .yes
        case "no"?: .no
        default: .unknown
        }
        let mapping = stun.flatMap { report in report.fact("behind_nat") == "no" ? "none" : report.fact("mapping").flatMap { $0 == "unknown" ? nil : $0 } }
        return PeerReachability(
            publicAddress: stun?.fact("mapped_address"), mapping: mapping,
            filtering: stun?.fact("filtering").flatMap { $0 == "unknown" ? nil : $0 },
            dialable: dialable, checkedAtMicros: unixMicros())
    }

    private func advise(_ reports: [ProbeReport], _ reachability: PeerReachability) {
        switch reachability.dialable {
        case .no:
            let ports = mesh.listening.map { "\($0.transport) \($0.address.port)" }.joined(separator: ", ")
            if config.transport.advertisedEndpoints.isEmpty {
                logger.warning("""
                    this node is not reachable from outside\(reachability.publicAddress.map { " (public address \($0))" } ?? "") and advertises no forwarded port: \
                    peers outside its network cannot dial it, so it dials them (and peers behind other NATs reach it through relays). \
                    To accept links, forward the P2P port (\(ports)) on the router to this host and set transport.advertise to the public address and port; see docs/nat.md
                    """)
            } else {
                logger.warning("""
                    this node advertises \(config.transport.advertisedEndpoints.map(\.description).joined(separator: ", ")) but the signal server's dial-back did not reach it: \
                    check the router's port forward (or the cloud security group) for \(ports); see docs/nat.md. Until then it dials its peers itself
                    """)
            }
        case .yes:
            logger.info("this node is reachable from outside: peers can dial it")
        case .unknown:
            break
        }
    }
}
