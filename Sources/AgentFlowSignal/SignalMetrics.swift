import Metrics
import Synchronization
public import Prometheus

/// The signal server's metrics, through swift-metrics with a Prometheus
/// registry of its own (not the process-global one), so several servers in
/// one test process never mix their numbers. `/metrics` renders `registry`.
public struct SignalMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    let nodes: Metrics.Gauge
    let evictions: Metrics.Counter
    let storeErrors: Metrics.Counter
    /// STUN outcomes are few and fixed; their counters are made once, since
    /// datagrams arrive at thousands per second.
    private let stunCounters: [String: Metrics.Counter]
    /// Request counters by "route status", made on first use and then reused:
    /// building a counter looks it up in the registry under a lock.
    private let requestCounters = RequestCounterCache()

    public init() {
        registry = PrometheusCollectorRegistry()
        factory = PrometheusMetricsFactory(registry: registry)
        nodes = Metrics.Gauge(label: "agentflow_signal_nodes", factory: factory)
        evictions = Metrics.Counter(label: "agentflow_signal_evictions_total", factory: factory)
        storeErrors = Metrics.Counter(label: "agentflow_signal_store_errors_total", factory: factory)
        var stun: [String: Metrics.Counter] = [:]
        for outcome in STUNBindingResponder.Outcome.allCases {
            stun[outcome.rawValue] = Metrics.Counter(label: "agentflow_signal_stun_packets_total", dimensions: [("result", outcome.rawValue)], factory: factory)
        }
        stunCounters = stun
    }

    /// Counts one HTTP request by route template and status code.
    func countRequest(route: String, status: Int) {
        let factory = self.factory
        requestCounters.counter(for: "\(route) \(status)") {
            Metrics.Counter(label: "agentflow_signal_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory)
        }.increment()
    }

    /// Counts one STUN datagram by what became of it (`answered`, `heartbeat`, `malformed`, `bad_credentials`).
    func countSTUN(_ outcome: STUNBindingResponder.Outcome) {
        stunCounters[outcome.rawValue]?.increment()
    }

    /// The Prometheus text exposition.
    public func render() -> String { registry.emitToString() }
}

/// Caches request counters; routes are a fixed set and statuses few, so it stays small.
final class RequestCounterCache: Sendable {
    private let counters = Mutex<[String: Metrics.Counter]>([:])

    func counter(for key: String, make: () -> Metrics.Counter) -> Metrics.Counter {
        counters.withLock { table in
            if let existing = table[key] { return existing }
            let counter = make()
            table[key] = counter
            return counter
        }
    }
}
