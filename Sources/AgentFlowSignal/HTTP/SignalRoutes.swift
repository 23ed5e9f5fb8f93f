import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird

/// The REST API of the signal server; docs/signal-openapi.yaml describes it exactly.
/// `GET /healthz`: up, and the STUN port (so a probe finds it without registering).
struct HealthAnswer: Encodable {
    var status: String
    var stunPort: Int?
    enum CodingKeys: String, CodingKey { case status, stunPort = "stun_port" }
}

enum SignalRoutes {
    /// Every route and its method, as the OpenAPI document lists them: another
    /// method on one of these paths is a 405 with `Allow`, not a 404. HEAD is
    /// answered wherever GET is (`HEADAsGET`), and `Allow` says so.
    static let methods: [String: String] = [
        "/healthz": "GET", "/register": "POST", "/heartbeat": "POST", "/deregister": "POST",
        "/list": "GET", "/metrics": "GET", "/openapi.yaml": "GET", "/reach": "POST",
    ]

    /// The `Allow` header of `path`: its method, and HEAD beside GET.
    static func allow(_ path: String) -> String? {
        methods[path].map { $0 == "GET" ? "GET, HEAD" : $0 }
    }

    static func router(registry: SignalRegistry, config: SignalConfig, openAPIDocument: [UInt8]) -> Router<SignalRequestContext> {
        let router = Router(context: SignalRequestContext.self)
        router.add(middleware: RequestLogMiddleware(metrics: registry.metrics))
        router.add(middleware: JSONErrorMiddleware(metrics: registry.metrics))
        if !config.http.corsAllowedOrigins.isEmpty {
            router.add(middleware: CORSOriginsMiddleware(allowed: Set(config.http.corsAllowedOrigins)))
        }
        router.add(middleware: ClusterTokenMiddleware(token: config.auth.token.map { Array($0.utf8) }))
        let maxBody = config.http.maxBodyBytes

        router.get("/healthz") { _, _ in
            try JSONResponse.make(HealthAnswer(status: "ok", stunPort: registry.boundSTUNPort.withLock { $0 }))
        }

        router.post("/register") { request, context in
            let body = try await readBody(request, limit: maxBody)
            let (created, answer) = try await registry.register(body: body.readableBytesView, observedAddress: context.observedAddress)
            return try JSONResponse.make(answer, status: created ? .created : .ok, headers: [.agentflowNodeID: answer.nodeID])
        }

        router.post("/heartbeat") { request, context in
            let body = try await readBody(request, limit: maxBody)
            let answer = try await registry.heartbeat(body: body.readableBytesView, observedAddress: context.observedAddress)
            return try JSONResponse.make(answer, headers: [.agentflowNodeID: answer.nodeID])
        }

        router.post("/deregister") { request, _ in
            let body = try await readBody(request, limit: maxBody)
            let revision = try await registry.deregister(body: body.readableBytesView)
            return try JSONResponse.make(["revision": revision])
        }

        let reach = ReachChecker(registry: registry, settings: config.reach)
        router.post("/reach") { request, context in
            let body = try await readBody(request, limit: maxBody)
            return try JSONResponse.make(try await reach.check(body: body.readableBytesView, sourceIP: context.observedAddress))
        }

        router.get("/list") { request, _ in
            let query = request.uri.queryParameters
            var since: UInt64?
            if let text = query["since"] {
                guard let value = Int64(text), value >= 0 else { throw SignalAPIError.badRequest(field: "since", "expected a revision number (an integer from 0 to 2^63-1)") }
                since = UInt64(value)
            }
            var filter = SignalRegistry.ListFilter(transport: query["transport"].map(String.init))
            if let transport = filter.transport, !NodeID.isValid(transport) || transport.utf8.count > 32 {
                throw SignalAPIError.badRequest(field: "transport", "expected a transport name like grpc or tcp")
            }
            for label in query.getAll("label") {
                // Empty pieces kept: "=v" has an empty key (refused), "k=" asks for an empty value.
                let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let key = parts.first, !key.isEmpty else { throw SignalAPIError.badRequest(field: "label", "expected key or key=value with a non-empty key") }
                filter.labels.append((String(key), parts.count == 2 ? String(parts[1]) : nil))
            }
            for name in query.map({ String($0.key) }) where !["since", "transport", "label"].contains(name) {
                throw SignalAPIError.badRequest(field: name, "unknown query parameter; allowed: since, transport, label")
            }
            // Conditional polling: nothing changed since the client's copy → 304, no body.
            let revision = try await registry.store.revision()
            let etag = "\"r\(revision)\""
            if let match = request.headers[.ifNoneMatch], match.split(separator: ",").contains(where: { $0.trimmingWhitespace == etag }) {
                return Response(status: .notModified, headers: [.eTag: etag])
            }
            let answer = try await registry.list(since: since, filter: filter)
            return try JSONResponse.make(answer, headers: [.eTag: "\"r\(answer.revision)\"", .cacheControl: "no-cache"])
        }

        router.get("/metrics") { _, _ in
            let text = registry.metrics.render()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }

        router.get("/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: openAPIDocument)))
        }
        return router
    }

    /// Reads a request body of at most `limit` bytes. A declared Content-Length
    /// over the limit is refused at once, before any of the body is read.
    static func readBody(_ request: Request, limit: Int) async throws -> ByteBuffer {
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw SignalAPIError(.contentTooLarge, "body_too_large", "the request body (\(declared) bytes) exceeds http.max_body_bytes = \(limit)")
        }
        var request = request
        return try await request.collectBody(upTo: limit)
    }
}
