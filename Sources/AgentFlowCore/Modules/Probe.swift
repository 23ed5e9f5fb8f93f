/// A one-shot check that returns a structured report: "can this node reach
/// the signal server", "what is my public address (STUN)". `agentflow probe`
/// runs one by name and prints its report.
///
/// A probe keeps its context's `timeout`: `run()` returns within it, with a
/// `failed` report saying which step did not answer, and honours task
/// cancellation. It throws only when it cannot run at all (a bad option).
public protocol Probe: Sendable {
    var name: String { get }
    func run() async throws -> ProbeReport
}

/// The result of a probe, printable as text or JSON.
public struct ProbeReport: Sendable, Hashable, Codable {
    public enum Outcome: String, Sendable, Hashable, Codable {
        case passed, failed
    }

    public var probe: String
    public var outcome: Outcome
    /// One line a person reads first.
    public var summary: String
    /// Measured facts, in order (`mapped_address: 203.0.113.7:40112`, `rtt_ms: 12.4`).
    public var facts: [Fact]

    public struct Fact: Sendable, Hashable, Codable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The first fact named `name`.
    public func fact(_ name: String) -> String? { facts.first { $0.name == name }?.value }

    public init(probe: String, outcome: Outcome, summary: String, facts: [Fact] = []) {
        self.probe = probe
        self.outcome = outcome
        self.summary = summary
        self.facts = facts
    }
}

/// What a probe may need: the node's effective config values.
public struct ProbeContext: Sendable {
    public var localNodeID: NodeID
    /// The whole probe's budget: `run()` returns (a failed report, or an
    /// error) within it, however the network behaves. Default 10s.
    public var timeout: Duration
    /// The node's data folder (where discovery keeps its secrets). Default `.`.
    public var dataDirectory: String
    /// The node's discovery backend as configured: a probe that talks to the
    /// cluster's signal server finds its URL, token and secret here.
    public var discovery: ConfiguredDiscovery?
    /// Each transport's listen address, in the node's order of preference.
    public var listening: [DiscoveredEndpoint]
    /// `transport.advertise`, as configured (empty: the node advertises what it binds).
    public var advertised: [DiscoveredEndpoint]

    public init(localNodeID: NodeID, timeout: Duration = .seconds(10), dataDirectory: String = ".", discovery: ConfiguredDiscovery? = nil,
                listening: [DiscoveredEndpoint] = [], advertised: [DiscoveredEndpoint] = []) {
        self.localNodeID = localNodeID
        self.timeout = timeout
        self.dataDirectory = dataDirectory
        self.discovery = discovery
        self.listening = listening
        self.advertised = advertised
    }
}

/// A probe as a registrable module; options come from `probes.<name>` in config
/// or from command-line `--option key=value` pairs.
public protocol ProbeModule: SendableMetatype {
    associatedtype Options: Sendable
    static var name: String { get }
    static var summary: String { get }
    static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options
    static func makeProbe(options: Options, context: ProbeContext) throws -> any Probe
}
