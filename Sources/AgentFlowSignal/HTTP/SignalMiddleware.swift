import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import CoreMetrics
import Logging

/// Turns every error into the API's JSON error body, so clients never see
/// Hummingbird's plain-text defaults: `{"error": {"code": "...", "message": "..."}}`.
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = SignalRequestContext
    let metrics: SignalMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as SignalAPIError {
            return JSONResponse.error(error)
        } catch let error as JSONBodyError {
            return JSONResponse.error(SignalAPIError(.badRequest, error.code, error.message))
        } catch let error as any HTTPResponseError {
            let apiError: SignalAPIError = switch error.status {
            case .notFound:
                if let allowed = SignalRoutes.allow(request.uri.path) {
                    // The path exists: the method is what is wrong (RFC 9110 §15.5.6).
                    SignalAPIError(.methodNotAllowed, "method_not_allowed", "\(request.uri.path) answers \(allowed) only", allow: allowed)
                } else {
                    SignalAPIError(.notFound, "not_found", "no route \(request.method) \(request.uri.path); see GET /openapi.yaml")
                }
            case .contentTooLarge: SignalAPIError(.contentTooLarge, "body_too_large", "the request body exceeds http.max_body_bytes")
            case .methodNotAllowed: SignalAPIError(.methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed on \(request.uri.path)")
            default: SignalAPIError(error.status, "http_error", "\(error.status.reasonPhrase)")
            }
            return JSONResponse.error(apiError)
        } catch let error as RedisError {
            metrics.storeErrors.increment()
            context.logger.error("store failed", metadata: ["error": "\(error)"])
            return JSONResponse.error(SignalAPIError(.serviceUnavailable, "store_unavailable", "the node store is unavailable; retry with backoff"))
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            return JSONResponse.error(SignalAPIError(.internalServerError, "internal_error", "the server failed to handle the request; see its log"))
        }
    }
}

/// Requires `Authorization: Bearer <cluster token>` on every route but
/// `/healthz` (and CORS preflights), comparing in constant time.
struct ClusterTokenMiddleware: RouterMiddleware {
    typealias Context = SignalRequestContext
    let token: [UInt8]?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token, request.uri.path != "/healthz", request.method != .options else {
            return try await next(request, context)
        }
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        guard header.hasPrefix(prefix), ConstantTime.equals(Array(header.utf8.dropFirst(prefix.utf8.count)), token) else {
            throw SignalAPIError.unauthorized
        }
        return try await next(request, context)
    }
}

/// CORS for the configured origins (`*` for any): answers preflights and
/// adds `Access-Control-Allow-Origin` to responses for allowed origins.
struct CORSOriginsMiddleware: RouterMiddleware {
    typealias Context = SignalRequestContext
    let allowed: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin], allowed.contains("*") || allowed.contains(origin) else {
            return try await next(request, context)
        }
        let allowOrigin = allowed.contains("*") ? "*" : origin
        if request.method == .options {
            var headers = HTTPFields()
            headers[.accessControlAllowOrigin] = allowOrigin
            headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
            headers[.accessControlAllowHeaders] = "Authorization, Content-Type, If-None-Match"
            headers[.accessControlMaxAge] = "600"
            headers[.vary] = "Origin"
            return Response(status: .noContent, headers: headers)
        }
        var response = try await next(request, context)
        response.headers[.accessControlAllowOrigin] = allowOrigin
        response.headers[.accessControlExposeHeaders] = "ETag"
        response.headers[.vary] = "Origin"
        return response
    }
}

/// One structured log line and one metrics sample per request:
/// method, route, status, latency, and the node id when the handler knew it.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = SignalRequestContext
    let metrics: SignalMetrics
    static let knownRoutes: Set<String> = ["/register", "/heartbeat", "/deregister", "/list", "/healthz", "/metrics", "/openapi.yaml"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        let elapsed = ContinuousClock.now - start
        let route = Self.knownRoutes.contains(request.uri.path) ? request.uri.path : "other"
        metrics.countRequest(route: route, status: response.status.code)
        var metadata: Logger.Metadata = [
            "method": "\(request.method)", "route": "\(route)", "status": "\(response.status.code)",
            "latency_us": "\(elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)",
        ]
        if let node = response.headers[.agentflowNodeID] { metadata["node_id"] = "\(node)" }
        context.logger.info("request", metadata: metadata)
        return response
    }
}

extension HTTPField.Name {
    /// Set by handlers so the request log can name the node; it also tells the client which record was touched.
    static let agentflowNodeID = HTTPField.Name("X-AgentFlow-Node-ID")!
}

/// JSON response helpers.
enum JSONResponse {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let data = try encoder.encode(value)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ error: SignalAPIError) -> Response {
        let body = ErrorResponse(error: .init(code: error.code, message: error.message))
        var headers = HTTPFields()
        if error.status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        if let allow = error.allow { headers[.allow] = allow }
        if let seconds = error.retryAfterSeconds { headers[.retryAfter] = String(seconds) }
        // Encoding a struct of two strings cannot fail.
        return (try? make(body, status: error.status, headers: headers)) ?? Response(status: error.status)
    }
}
