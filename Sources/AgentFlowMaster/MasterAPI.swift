import AgentFlowCore
import AgentFlowMesh
import Foundation
import HTTPTypes
import Hummingbird
import Prometheus

/// The master's local HTTP API. Loopback by default; when `api.token` is set
/// every route but `/healthz` needs `Authorization: Bearer <token>`.
struct MasterAPI: Sendable {
    let mesh: MeshNode
    let token: String?
    let metricsRegistry: PrometheusCollectorRegistry

    func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: APITokenMiddleware(token: token.map { Array($0.utf8) }))
        router.get("/healthz") { _, _ in
            try JSONBody.response(["status": "ok"])
        }
        router.get("/api/cluster/status") { _, _ in
            try JSONBody.response(await mesh.status())
        }
        router.get("/metrics") { _, _ in
            var bytes: [UInt8] = []
            metricsRegistry.emit(into: &bytes)
            let text = String(decoding: bytes, as: UTF8.self) + (await meshMetrics())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        return router
    }

    /// The mesh's own figures in Prometheus text, computed at scrape time from its status.
    func meshMetrics() async -> String {
        let status = await mesh.status()
        let counters = await mesh.counters()
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for sample in samples { lines.append("\(name)\(sample.labels) \(sample.value)") }
        }
        metric("agentflow_mesh_links", "gauge", "Live direct links.", [("", String(status.linkCount))])
        metric("agentflow_mesh_peers_known", "gauge", "Peers this node knows (discovery, peer book, exchange).", [("", String(status.peers.count))])
        metric("agentflow_mesh_links_established_total", "counter", "Links admitted since start.", [("", String(counters.linksEstablished))])
        metric("agentflow_mesh_dial_failures_total", "counter", "Failed dials since start.", [("", String(counters.dialFailures))])
        metric("agentflow_mesh_link_rtt_seconds", "gauge", "Round trip of the last Ping per link.",
               status.peers.compactMap { peer in peer.rttMilliseconds.map { ("{peer=\"\(peer.nodeID)\"}", String($0 / 1_000)) } })
        metric("agentflow_mesh_discovery_healthy", "gauge", "1 when the discovery backend is healthy.",
               [("{kind=\"\(status.local.discovery.kind)\"}", status.local.discovery.health == "healthy" ? "1" : "0")])
        return lines.joined(separator: "\n") + "\n"
    }
}

struct APITokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: [UInt8]?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token, request.uri.path != "/healthz" else { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        guard header.hasPrefix(prefix), ConstantTime.equals(Array(header.utf8.dropFirst(prefix.utf8.count)), token) else {
            return try JSONBody.response(["error": ["code": "unauthorized", "message": "missing or wrong api token: send `Authorization: Bearer <token>`"]], status: .unauthorized)
        }
        return try await next(request, context)
    }
}

enum JSONBody {
    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}
