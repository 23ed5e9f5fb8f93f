import AgentFlowCore
import AgentFlowMesh
import AgentFlowCluster
import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import AgentFlowHTTP
import Hummingbird
import Prometheus

/// The master's local HTTP API. Loopback by default; when `api.token` is set
/// every route but `/healthz` needs `Authorization: Bearer <token>`.
struct MasterAPI: Sendable {
    let mesh: MeshNode
    let cluster: ClusterNode
    let monitor: LocalMonitor
    let commands: CommandRouter
    let commandTimeout: Duration
    let token: String?
    let metricsRegistry: PrometheusCollectorRegistry
    static let maxBodyBytes = 1 << 20

    func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: APITokenMiddleware(token: token.map { Array($0.utf8) }))
        router.get("/healthz") { _, _ in
            try JSONBody.response(["status": "ok"])
        }
        // The dashboard: a static page (no data in it) that reads /api/ws and /api/commands with the token.
        for path in ["/", "/index.html"] {
            router.get(RouterPath(path)) { _, _ in DashboardBundle.response(DashboardBundle.indexHTML, type: "text/html; charset=utf-8") }
        }
        router.get("/app.js") { _, _ in DashboardBundle.response(DashboardBundle.appJS, type: "text/javascript; charset=utf-8") }
        // Reached only when the WebSocket upgrade did not happen: say why.
        router.get(RouterPath(DashboardSocket.path)) { request, _ in
            if let refusal = DashboardSocket.refusal(token: token.map { Array($0.utf8) }, path: request.uri.description, authority: request.head.authority, headers: request.headers) { throw refusal }
            return try JSONBody.error(.upgradeRequired, "upgrade_required", "\(DashboardSocket.path) is a WebSocket: connect with `Upgrade: websocket`")
        }
        router.get("/api/cluster/status") { _, _ in
            let view = ClusterStatusView(mesh: mesh.status(), origins: cluster.origins(), topology: mesh.topology(), localID: cluster.localID.rawValue, nowMicros: unixMicros())
            return try JSONBody.response(view)
        }
        router.post("/api/publish/task_status") { request, _ in
            var json = try await Self.body(request)
            let task = try Self.name(&json, "task")
            let state = try json.string("state", maxLength: 16)!
            guard let taskState = Self.taskStates[state] else {
                throw JSONBodyError.field("state", "expected one of \(Self.taskStates.keys.sorted().joined(separator: ", "))")
            }
            var status = Agentflow_Mesh_V1_TaskStatus()
            status.task = task
            status.state = taskState
            status.exitCode = Int32(try json.integer("exit_code", in: -255...255, required: false) ?? 0)
            status.message = try json.string("message", maxLength: 1_024, required: false) ?? ""
            try json.finish()
            monitor.publish(.taskStatus(status))
            return try JSONBody.response(["published": 1], status: .accepted)
        }
        router.post("/api/publish/logs") { request, _ in
            var json = try await Self.body(request)
            let task = try Self.name(&json, "task")
            let stream = try json.string("stream", maxLength: 8, required: false) ?? "stdout"
            guard stream == "stdout" || stream == "stderr" else { throw JSONBodyError.field("stream", "expected stdout or stderr") }
            let lines = try json.strings("lines", maxCount: 1_000, maxBytes: 4_096)
            guard !lines.isEmpty else { throw JSONBodyError.field("lines", "required: an array of 1-1000 strings") }
            try json.finish()
            for text in lines {
                var line = Agentflow_Mesh_V1_TaskLog()
                line.task = task
                line.stream = stream == "stderr" ? .stderr : .stdout
                line.text = text
                monitor.publish(.taskLog(line))
            }
            return try JSONBody.response(["published": lines.count], status: .accepted)
        }
        router.post("/api/publish/alert") { request, _ in
            var json = try await Self.body(request)
            let id = try Self.name(&json, "alert_id")
            let severityText = try json.string("severity", maxLength: 16, required: false) ?? "warning"
            guard let severity = Self.severities[severityText] else { throw JSONBodyError.field("severity", "expected info, warning or critical") }
            let summary = try json.string("summary", maxLength: 1_024, required: false) ?? id
            let details = try json.stringMap("details", maxCount: 32, maxEntryBytes: 1_024)
            let active = try json.bool("active", required: false) ?? true
            try json.finish()
            let changed = monitor.setAlert(id: id, severity: severity, summary: summary, details: details, active: active) != nil
            return try JSONBody.response(["changed": changed], status: .accepted)
        }
        router.post("/api/commands") { request, _ in
            var json = try await Self.body(request)
            let targetText = try json.string("target", maxLength: 63)!
            guard let target = NodeID(targetText) else { throw JSONBodyError.field("target", "\"\(targetText)\" is not a node id: \(NodeID.rules)") }
            let action = try json.string("action", maxLength: 64)!
            let args = try json.stringMap("args", maxCount: 32, maxEntryBytes: 4_096)
            let key = try json.string("idempotency_key", maxLength: 128, required: false)
            let timeoutMs = try json.integer("timeout_ms", in: 100...600_000, required: false)
            try json.finish()
            if target != cluster.localID {
                let known = mesh.knownPeers()
                guard known.contains(target) || cluster.knows(target) else {
                    return try JSONBody.error(.notFound, "unknown_target", "no master \(target) is known to \(cluster.localID): not linked, not discovered, not heard of")
                }
            }
            let timeout = timeoutMs.map { Duration.milliseconds($0) } ?? commandTimeout
            switch await commands.execute(target: target, action: action, args: args, idempotencyKey: key, timeout: timeout) {
            case .unreachable(let why):
                return try JSONBody.error(.serviceUnavailable, "unreachable", why)
            case .timedOut(let receipt, let after):
                return try JSONBody.error(.gatewayTimeout, "timeout", "no result from \(target) within \(after.roundedMilliseconds) ms; " + (receipt ? "the target confirmed receipt, so it may still be running" : "no receipt either: the command may not have arrived"))
            case .answered(let result, let target, let receiptAfter, let total):
                switch result.status {
                case .refused: return try JSONBody.error(.forbidden, "refused", result.message)
                case .unknownAction: return try JSONBody.error(.badRequest, "unknown_action", result.message)
                case .unreachable: return try JSONBody.error(.serviceUnavailable, "unreachable", result.message)
                default:
                    return try JSONBody.response(CommandAnswer(
                        status: result.status == .ok ? "ok" : "failed", target: target.rawValue, exitCode: result.exitCode,
                        output: CommandAnswer.Output(action: action, text: result.output),
                        message: result.message, receiptMilliseconds: receiptAfter?.roundedMilliseconds, totalMilliseconds: total.roundedMilliseconds))
                }
            }
        }
        router.get("/metrics") { _, _ in
            var bytes: [UInt8] = []
            metricsRegistry.emit(into: &bytes)
            let text = String(decoding: bytes, as: UTF8.self) + (await meshMetrics())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        return router
    }

    func dashboard(keepalive: Duration) -> DashboardSocket {
        DashboardSocket(mesh: mesh, cluster: cluster, token: token.map { Array($0.utf8) }, keepalive: keepalive)
    }

    static let taskStates: [String: Agentflow_Mesh_V1_TaskState] = ["pending": .pending, "running": .running, "exited": .exited, "failed": .failed, "stopped": .stopped]
    static let severities: [String: Agentflow_Mesh_V1_AlertSeverity] = ["info": .info, "warning": .warning, "critical": .critical]

    /// A strict JSON object body of at most 1 MiB.
    static func body(_ request: Request) async throws -> StrictJSONObject {
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > maxBodyBytes {
            throw APIError(.contentTooLarge, "body_too_large", "the request body (\(declared) bytes) exceeds \(maxBodyBytes) bytes")
        }
        var request = request
        let buffer = try await request.collectBody(upTo: maxBodyBytes)
        return try StrictJSONObject.parse(buffer.readableBytesView)
    }

    /// A task or alert name field: node-id rules, so it is safe in logs and ids.
    static func name(_ json: inout StrictJSONObject, _ key: String) throws -> String {
        let text = try json.string(key, maxLength: 63)!
        guard NodeID.isValid(text) else { throw JSONBodyError.field(key, "\"\(text)\" is not a valid name: \(NodeID.rules)") }
        return text
    }

    /// The mesh's own figures in Prometheus text, computed at scrape time from its status.
    func meshMetrics() async -> String {
        let status = mesh.status()
        let counters = mesh.counters()
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for sample in samples { lines.append("\(name)\(sample.labels) \(sample.value)") }
        }
        metric("agentflow_mesh_links", "gauge", "Live direct links.", [("", String(status.linkCount))])
        if let certificate = status.local.certificate {
            metric("agentflow_certificate_expiry_seconds", "gauge", "Seconds until this node's own certificate expires (negative: expired).",
                   [("", String(certificate.secondsLeft))])
        }
        metric("agentflow_mesh_peers_known", "gauge", "Peers this node knows (discovery, peer book, exchange).", [("", String(status.peers.count))])
        metric("agentflow_mesh_links_established_total", "counter", "Links admitted since start.", [("", String(counters.linksEstablished))])
        metric("agentflow_mesh_dial_failures_total", "counter", "Failed dials since start.", [("", String(counters.dialFailures))])
        metric("agentflow_mesh_link_rtt_seconds", "gauge", "Round trip of the last Ping per link.",
               status.peers.compactMap { peer in peer.rttMilliseconds.map { ("{peer=\"\(peer.nodeID)\"}", String($0 / 1_000)) } })
        metric("agentflow_mesh_discovery_healthy", "gauge", "1 when the discovery backend is healthy.",
               [("{kind=\"\(status.local.discovery.kind)\"}", status.local.discovery.health == "healthy" ? "1" : "0")])
        let events = cluster.counters
        metric("agentflow_cluster_events_total", "counter", "Events by what happened to them here.", [
            ("{result=\"published\"}", String(events.published)), ("{result=\"applied\"}", String(events.applied)),
            ("{result=\"duplicate\"}", String(events.duplicates)), ("{result=\"stale\"}", String(events.stale)),
            ("{result=\"gap\"}", String(events.gaps)), ("{result=\"relayed\"}", String(events.relayed)),
            ("{result=\"skipped_full_queue\"}", String(events.skippedFullQueue)),
        ])
        metric("agentflow_cluster_sync_sent_total", "counter", "What this node sent peers that lacked it.", [
            ("{kind=\"event\"}", String(events.syncEventsSent)), ("{kind=\"snapshot\"}", String(events.syncSnapshotsSent)),
        ])
        metric("agentflow_cluster_origins", "gauge", "Origins in this node's cluster view (itself included).", [("", String(cluster.origins().count))])
        return lines.joined(separator: "\n") + "\n"
    }
}

struct CommandAnswer: Encodable {
    /// A command's output: text, or for `status` the target's state as a JSON object
    /// (the snake_case model `GET /api/cluster/status` uses).
    enum Output: Encodable {
        case text(String)
        case object(JSONValue)

        init(action: String, text: String) {
            if action == "status", let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)), case .object = value {
                self = .object(value)
            } else {
                self = .text(text)
            }
        }

        func encode(to encoder: any Encoder) throws {
            switch self {
            case .text(let text): try text.encode(to: encoder)
            case .object(let value): try value.encode(to: encoder)
            }
        }
    }

    var status: String
    var target: String
    var exitCode: Int32
    var output: Output
    var message: String
    var receiptMilliseconds: Double?
    var totalMilliseconds: Double
    enum CodingKeys: String, CodingKey {
        case status, target, exitCode = "exit_code", output, message, receiptMilliseconds = "receipt_ms", totalMilliseconds = "total_ms"
    }
}

/// An API error with its HTTP status; rendered as `{error: {code, message}}`.
struct APIError: Error {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
}

/// Every error leaves as JSON naming the field or the reason; nothing escapes as a bare 500.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as JSONBodyError {
            return try JSONBody.error(.badRequest, error.code, error.message)
        } catch let error as APIError {
            return try JSONBody.error(error.status, error.code, error.message)
        } catch let error as any HTTPResponseError {
            let code = error.status == .notFound ? "not_found" : error.status == .contentTooLarge ? "body_too_large" : "http_error"
            return try JSONBody.error(error.status, code, error.status == .notFound ? "no route \(request.method) \(request.uri.path)" : error.status.reasonPhrase)
        }
    }
}

struct APITokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: [UInt8]?
    /// Paths with no data behind them: the health check and the dashboard's static page.
    static let open: Set<String> = ["/healthz", "/", "/index.html", "/app.js", DashboardSocket.path]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // /api/ws checks its token itself (a browser cannot set the header on a WebSocket).
        guard let token, !Self.open.contains(request.uri.path) else { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        guard header.hasPrefix(prefix), ConstantTime.equals(Array(header.utf8.dropFirst(prefix.utf8.count)), token) else {
            return try JSONBody.error(.unauthorized, "unauthorized", "missing or wrong api token: send `Authorization: Bearer <token>`")
        }
        return try await next(request, context)
    }
}

enum JSONBody {
    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) throws -> Response {
        try response(["error": ["code": code, "message": message]], status: status)
    }

    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}

extension Duration {
    var roundedMilliseconds: Double {
        (inMilliseconds * 1_000).rounded() / 1_000
    }
}

/// Any JSON value, to pass a JSON document through unchanged.
indirect enum JSONValue: Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            // Whole numbers stay integers (byte counts, exit codes).
            if value.rounded() == value, abs(value) < 9e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
