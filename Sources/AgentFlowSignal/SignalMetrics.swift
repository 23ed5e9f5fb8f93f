import Metrics
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

    public init() {
        registry = PrometheusCollectorRegistry()
        factory = PrometheusMetricsFactory(registry: registry)
        nodes = Metrics.Gauge(label: "agentflow_signal_nodes", factory: factory)
        evictions = Metrics.Counter(label: "agentflow_signal_evictions_total", factory: factory)
        storeErrors = Metrics.Counter(label: "agentflow_signal_store_errors_total", factory: factory)
    }

    /// Counts one HTTP request by route template and status code.
    func countRequest(route: String, status: Int) {
        Metrics.Counter(label: "agentflow_signal_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory).increment()
    }

    /// Counts one STUN datagram by what became of it (`answered`, `heartbeat`, `malformed`, `bad_credentials`).
    func countSTUN(_ result: String) {
        Metrics.Counter(label: "agentflow_signal_stun_packets_total", dimensions: [("result", result)], factory: factory).increment()
    }

    /// The Prometheus text exposition.
    public func render() -> String { registry.emitToString() }
}
