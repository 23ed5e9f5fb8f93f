import AgentFlowCore
import AgentFlowSTUN
import Foundation

/// The signal server's REST API as the `signal` discovery backend uses it,
/// over libcurl. Answers are decoded leniently (unknown fields ignored), so a
/// newer server does not break an older node.
struct SignalClient: Sendable {
    let baseURL: String
    let token: String?
    let timeoutMilliseconds: Int
    let http: CurlHTTPClient

    struct Registration: Decodable {
        var ttlSeconds: Double
        var heartbeatIntervalSeconds: Double
        var observedAddress: String?
        var stunPort: Int?
        var minPollIntervalSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case ttlSeconds = "ttl_seconds", heartbeatIntervalSeconds = "heartbeat_interval_seconds"
            case observedAddress = "observed_address", stunPort = "stun_port", minPollIntervalSeconds = "min_poll_interval_seconds"
        }
    }

    struct Node: Decodable {
        struct Endpoint: Decodable {
            var transport: String
            var host: String
            var port: Int
        }
        var nodeID: String
        var name: String
        var endpoints: [Endpoint]
        var labels: [String: String]
        enum CodingKeys: String, CodingKey { case nodeID = "node_id", name, endpoints, labels }
    }

    struct List: Decodable {
        var revision: UInt64
        var full: Bool
        var nodes: [Node]
        var removed: [String]
    }

    /// A failure with what the server said (its JSON error code, when it sent one).
    struct Failure: Error, CustomStringConvertible {
        var status: Int
        var code: String?
        var message: String
        var description: String { "signal server answered \(status)\(code.map { " \($0)" } ?? ""): \(message)" }
    }

    private var authorization: [String] { token.map { ["Authorization: Bearer \($0)"] } ?? [] }

    func register(_ local: LocalAnnouncement, endpoints: [DiscoveredEndpoint], secret: String) async throws -> Registration {
        var body: [String: Any] = [
            "node_id": local.nodeID.rawValue, "name": local.displayName, "version": local.softwareVersion, "secret": secret,
            "endpoints": endpoints.map { ["transport": $0.transport, "host": $0.address.host, "port": $0.address.port] },
        ]
        if !local.labels.isEmpty { body["labels"] = local.labels }
        let response = try await post("/register", body)
        return try decode(Registration.self, response, expecting: [200, 201])
    }

    enum HeartbeatAnswer: Equatable {
        /// Refreshed; the registry's state when the server said it.
        case alive(RegistryState?)
        /// The server no longer knows the node (evicted, or it restarted): it must register again.
        case unknownNode
    }

    func heartbeat(nodeID: NodeID, secret: String) async throws -> HeartbeatAnswer {
        let response = try await post("/heartbeat", ["node_id": nodeID.rawValue, "secret": secret])
        if response.status == 404 { return .unknownNode }
        let body = try decode(HeartbeatBody.self, response, expecting: [200])
        return .alive(body.revision.map { RegistryState(revision: $0, minPollIntervalSeconds: UInt32(clamping: body.minPollIntervalSeconds ?? 0)) })
    }

    private struct HeartbeatBody: Decodable {
        var revision: UInt64?
        var minPollIntervalSeconds: Int?
        enum CodingKeys: String, CodingKey { case revision, minPollIntervalSeconds = "min_poll_interval_seconds" }
    }

    func deregister(nodeID: NodeID, secret: String) async throws {
        let response = try await post("/deregister", ["node_id": nodeID.rawValue, "secret": secret], timeoutMilliseconds: 1_000)
        _ = try decode(Empty.self, response, expecting: [200, 404])
    }

    /// `GET /list?since=`, conditional on `etag`. Nil when nothing changed (304).
    func list(since revision: UInt64?, etag: String?) async throws -> (List, etag: String?)? {
        var headers = authorization
        if let etag { headers.append("If-None-Match: \(etag)") }
        let query = revision.map { "?since=\($0)" } ?? ""
        let response = try await http.request("GET", baseURL + "/list" + query, headers: headers, timeoutMilliseconds: timeoutMilliseconds, maxBodyBytes: 32 << 20)
        if response.status == 304 { return nil }
        return (try decode(List.self, response, expecting: [200]), response.header("etag"))
    }

    private struct Empty: Decodable {}

    private struct ErrorBody: Decodable {
        struct Detail: Decodable { var code: String; var message: String }
        var error: Detail
    }

    private func post(_ path: String, _ body: [String: Any], timeoutMilliseconds: Int? = nil) async throws -> CurlEasyHandle.Response {
        let data = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        return try await http.request(
            "POST", baseURL + path, headers: authorization + ["Content-Type: application/json"], body: Array(data),
            timeoutMilliseconds: timeoutMilliseconds ?? self.timeoutMilliseconds)
    }

    private func decode<T: Decodable>(_ type: T.Type, _ response: CurlEasyHandle.Response, expecting: Set<Int>) throws -> T {
        guard expecting.contains(response.status) else {
            let detail = try? JSONDecoder().decode(ErrorBody.self, from: Data(response.body))
            throw Failure(status: response.status, code: detail?.error.code,
                          message: detail?.error.message ?? String(decoding: response.body.prefix(200), as: UTF8.self))
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(response.body))
        } catch {
            throw Failure(status: response.status, code: nil, message: "unreadable answer: \(error)")
        }
    }
}
