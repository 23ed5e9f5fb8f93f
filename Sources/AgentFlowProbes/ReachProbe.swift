public import AgentFlowCore
import AgentFlowDiscovery
import Foundation

/// `reach`: can the outside reach this master's P2P port? The signal server
/// dials back (`POST /reach`) to this node's own address at each listen port,
/// and to each advertised endpoint that is this node's public address, with a
/// TLS ClientHello, and says what answered.
///
/// Passes when at least one endpoint was reachable. Needs the node to have
/// registered once (its signal secret on disk).
public enum ReachProbeModule: ProbeModule {
    public struct Options: Sendable, Hashable {
        /// Default: the node's discovery URL.
        public var signalURL: String?
        /// Extra ports to check at this node's public address (a port forward
        /// that maps another outside port). Default none.
        public var ports: [Int]

        public init(signalURL: String? = nil, ports: [Int] = []) {
            self.signalURL = signalURL
            self.ports = ports
        }
    }

    public static let name = "reach"
    public static let summary = "asks the signal server to dial back to this node's P2P ports: reachable from outside, or not"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        let ports: [Int] = try section.list("ports", default: [])
        if let bad = ports.first(where: { !(1...65_535).contains($0) }) {
            throw ConfigError(.invalidValue, path: section.path.appending(key: "ports"), value: String(bad), expected: "ports 1-65535", source: section.source)
        }
        return Options(signalURL: try section.optionalValue("signal_url"), ports: ports)
    }

    public static func makeProbe(options: Options, context: ProbeContext) throws -> any Probe {
        ReachProbe(options: options, context: context)
    }
}

struct ReachProbe: Probe {
    let options: ReachProbeModule.Options
    let context: ProbeContext
    var name: String { ReachProbeModule.name }

    struct Answer: Decodable {
        struct Result: Decodable {
            var transport: String?
            var host: String
            var port: Int
            var outcome: String
            var detail: String
            var elapsedMs: Double
            enum CodingKeys: String, CodingKey { case transport, host, port, outcome, detail, elapsedMs = "elapsed_ms" }
        }
        var sourceAddress: String
        var results: [Result]
        enum CodingKeys: String, CodingKey { case sourceAddress = "source_address", results }
    }

    /// What to ask the server to dial: the listen ports at our own address, and advertised endpoints.
    var endpoints: [[String: Any]] {
        var list: [[String: Any]] = []
        var seen = Set<String>()
        for endpoint in context.listening where seen.insert("\(endpoint.transport)/\(endpoint.address.port)").inserted {
            list.append(["transport": endpoint.transport, "port": endpoint.address.port])
        }
        for port in options.ports where seen.insert("/\(port)").inserted { list.append(["port": port]) }
        for endpoint in context.advertised where seen.insert("\(endpoint.transport)/\(endpoint.address)").inserted {
            list.append(["transport": endpoint.transport, "host": endpoint.address.host, "port": endpoint.address.port])
        }
        return Array(list.prefix(8))
    }

    func run() async throws -> ProbeReport {
        let target = try SignalServerTarget.resolve(url: options.signalURL, token: nil, context: context)
        let endpoints = self.endpoints
        guard !endpoints.isEmpty else {
            return ProbeReport(probe: name, outcome: .failed, summary: "nothing to check: this node has no listen address (run it with a master config)")
        }
        guard let secret = target.secret() else {
            return ProbeReport(probe: name, outcome: .failed, summary: "this node has not registered with the signal server yet (no secret at \(target.secretFile)): start the master, then probe again")
        }
        let body = Array(try JSONSerialization.data(withJSONObject: ["node_id": context.localNodeID.rawValue, "secret": secret, "endpoints": endpoints], options: [.sortedKeys]))
        return try await ProbeBudget.run(name: name, timeout: context.timeout) { [name, context] in
            let response: CurlEasyHandle.Response
            do {
                response = try await CurlHTTPClient(maxIdleHandles: 0).request(
                    "POST", target.url + "/reach", headers: target.authorization + ["Content-Type: application/json"], body: body,
                    timeoutMilliseconds: Int(context.timeout.inMilliseconds))
            } catch {
                return ProbeReport(probe: name, outcome: .failed, summary: "the signal server at \(target.url) did not answer: \(error)")
            }
            guard response.status == 200, let answer = try? JSONDecoder().decode(Answer.self, from: Data(response.body)) else {
                let message = (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]).flatMap { ($0["error"] as? [String: Any])?["message"] as? String }
                return ProbeReport(probe: name, outcome: .failed, summary: "the signal server refused the check (\(response.status)): \(message ?? "no message")")
            }
            var facts: [ProbeReport.Fact] = [.init("source_address", answer.sourceAddress)]
            for result in answer.results {
                let host = result.host.contains(":") ? "[\(result.host)]" : result.host
                facts.append(.init("endpoint", "\(result.transport.map { "\($0)://" } ?? "")\(host):\(result.port) \(result.outcome) (\(result.elapsedMs.fixed(0)) ms): \(result.detail)"))
            }
            let reachable = answer.results.filter { $0.outcome == "reachable" }
            facts.insert(.init("reachable", reachable.isEmpty ? "no" : "yes"), at: 0)
            if let first = reachable.first {
                let host = first.host.contains(":") ? "[\(first.host)]" : first.host
                return ProbeReport(probe: name, outcome: .passed, summary: "reachable from outside at \(host):\(first.port)", facts: facts)
            }
            let outcomes = Set(answer.results.map(\.outcome))
            let fix = outcomes.contains("timed_out")
                ? "forward the P2P port on your router (or open it in the cloud security group) to this host, and set transport.advertise to the public address: see docs/nat.md"
                : outcomes.contains("refused") ? "something rejects connections at \(answer.sourceAddress): forward the port to this host, or open the firewall (docs/nat.md)"
                : "see docs/nat.md"
            return ProbeReport(probe: name, outcome: .failed, summary: "not reachable from outside at \(answer.sourceAddress): \(fix)", facts: facts)
        }
    }
}
