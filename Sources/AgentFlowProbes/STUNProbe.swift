public import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSTUN

/// `stun`: this node's public address and how its NAT behaves (RFC 5780),
/// with a verdict a person acts on.
///
/// Servers come from `probes.stun.servers` (or `--server`); by default, the
/// cluster's signal server (its STUN port read from `/healthz`). Every server
/// is asked once (its RTT); the behaviour tests run against the first that
/// offers RFC 5780 (OTHER-ADDRESS).
public enum STUNProbeModule: ProbeModule {
    public struct Options: Sendable, Hashable {
        /// STUN servers, `host:port`. Default: the cluster's signal server.
        public var servers: [HostPort]
        /// The signal server to ask for its STUN port, when `servers` is empty. Default: the node's discovery URL.
        public var signalURL: String?
        /// How long one test waits for an answer. Default 1s.
        public var answerTimeout: ConfigDuration
        /// Run the hairpinning test. Default true.
        public var hairpinning: Bool
        /// Measure how long the NAT keeps an idle mapping, up to this long
        /// (slow: it takes that long; the probe's timeout must be longer).
        /// Default unset: not measured.
        public var lifetime: ConfigDuration?

        public init(servers: [HostPort] = [], signalURL: String? = nil, answerTimeout: ConfigDuration = .seconds(1), hairpinning: Bool = true,
                    lifetime: ConfigDuration? = nil) {
            self.servers = servers
            self.signalURL = signalURL
            self.answerTimeout = answerTimeout
            self.hairpinning = hairpinning
            self.lifetime = lifetime
        }
    }

    public static let name = "stun"
    public static let summary = "public address and NAT behaviour (RFC 5780 mapping, filtering, hairpinning) with a verdict"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(
            servers: try section.list("servers", default: []),
            signalURL: try section.optionalValue("signal_url"),
            answerTimeout: try section.value("answer_timeout", default: .seconds(1), in: .milliseconds(100) ... .seconds(10)),
            hairpinning: try section.value("hairpinning", default: true),
            lifetime: try section.optionalValue("lifetime"))
    }

    public static func makeProbe(options: Options, context: ProbeContext) throws -> any Probe {
        STUNProbe(options: options, context: context)
    }
}

struct STUNProbe: Probe {
    let options: STUNProbeModule.Options
    let context: ProbeContext
    var name: String { STUNProbeModule.name }

    func run() async throws -> ProbeReport {
        let started = ContinuousClock.now
        return try await ProbeBudget.run(name: name, timeout: context.timeout) {
            var facts: [ProbeReport.Fact] = []
            var servers = options.servers
            if servers.isEmpty {
                let target = try SignalServerTarget.resolve(url: options.signalURL, token: nil, context: context)
                guard let port = try? await target.stunPort(client: CurlHTTPClient(maxIdleHandles: 0), timeout: options.answerTimeout.duration * 3) else {
                    return ProbeReport(probe: name, outcome: .failed, summary: "no STUN server: the signal server at \(target.url) did not say its STUN port (is it up, with stun.enabled?); or give --server host:port")
                }
                servers = [HostPort(host: target.host, port: port)]
            }
            let discovery = NATBehaviorDiscovery(answerTimeout: options.answerTimeout.duration)
            var result: NATBehaviorDiscovery.Result?
            var answered = 0
            for server in servers {
                if result?.observations.otherAddress == nil {
                    let found = try await discovery.discover(server, hairpinning: options.hairpinning)
                    if let found {
                        answered += 1
                        facts.append(.init("rtt_ms", "\(server) \((found.roundTrip.inMilliseconds).fixed(1))"))
                        if found.observations.otherAddress != nil || result == nil { result = found }
                    } else {
                        facts.append(.init("rtt_ms", "\(server) no answer"))
                    }
                } else if let bound = try await discovery.bind(server) {
                    answered += 1
                    facts.append(.init("rtt_ms", "\(server) \((bound.roundTrip.inMilliseconds).fixed(1))"))
                } else {
                    facts.append(.init("rtt_ms", "\(server) no answer"))
                }
            }
            guard let result else {
                return ProbeReport(probe: name, outcome: .failed, summary: "no STUN server answered (\(servers.map(\.description).joined(separator: ", "))): UDP to it may be blocked", facts: facts)
            }
            let behavior = result.behavior
            facts.insert(contentsOf: [
                .init("mapped_address", result.observations.mapped.description),
                .init("local_address", result.observations.local.description),
                .init("behind_nat", behavior.behindNAT ? "yes" : "no"),
                .init("mapping", behavior.mapping?.rawValue ?? "unknown"),
                .init("filtering", behavior.filtering?.rawValue ?? "unknown"),
                .init("hairpinning", behavior.hairpinning.map { $0 ? "yes" : "no" } ?? "unknown"),
                .init("server", result.server.description),
                .init("other_address", result.observations.otherAddress?.description ?? "none"),
                .init("verdict", behavior.verdict.rawValue),
            ], at: 0)
            if let lifetime = options.lifetime {
                let text: String
                if !behavior.behindNAT {
                    text = "not applicable: no NAT"
                } else if result.observations.otherAddress == nil {
                    text = "not measured: the server offers no RFC 5780 (no OTHER-ADDRESS)"
                } else {
                    text = try await discovery.mappingLifetime(result.server, longest: lifetime.duration).text
                }
                facts.insert(.init("mapping_lifetime", text), at: 6)
            }
            for note in behavior.notes { facts.append(.init("note", note)) }
            facts.append(.init("elapsed_ms", (ContinuousClock.now - started).inMilliseconds.fixed(0)))
            let nat = behavior.behindNAT
                ? "behind NAT (mapping \(behavior.mapping?.rawValue ?? "unknown"), filtering \(behavior.filtering?.rawValue ?? "unknown"))"
                : "no NAT"
            return ProbeReport(probe: name, outcome: .passed, summary: "public address \(result.observations.mapped), \(nat): \(behavior.verdict.sentence)", facts: facts)
        }
    }
}

/// Keeps a probe inside its budget: the body's report, or a failed report
/// naming the budget when it runs out. Cancellation of the caller ends the body.
enum ProbeBudget {
    static func run(name: String, timeout: Duration, partial: FactLog? = nil, _ body: @escaping @Sendable () async throws -> ProbeReport) async throws -> ProbeReport {
        try await withThrowingTaskGroup(of: ProbeReport?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            let first = try await group.next()!
            if let first { return first }
            return ProbeReport(probe: name, outcome: .failed, summary: "the probe did not finish within its budget of \(timeout): a step got no answer",
                               facts: await partial?.all ?? [])
        }
    }
}
