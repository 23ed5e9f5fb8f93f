public import AgentFlowCore
import AgentFlowDiscovery
import Foundation

/// The cluster's signal server as a probe reaches it: its URL (from the
/// probe's own `url` option, else the node's `signal` discovery, else the
/// default `http://127.0.0.1:7070`), the cluster token, and the node's secret
/// file (for the checks that speak as the node).
public struct SignalServerTarget: Sendable, Hashable {
    public var url: String
    public var host: String
    public var port: Int
    public var token: String?
    public var secretFile: String

    /// Reads the target from `context`, with `url` (a probe option) first.
    public static func resolve(url: String?, token: String?, context: ProbeContext) throws -> SignalServerTarget {
        let signal = context.discovery?.decodedOptions as? SignalDiscoveryModule.Options
        let base = url ?? signal?.url ?? "http://127.0.0.1:7070"
        guard let components = URLComponents(string: base), let host = components.host, !host.isEmpty,
              let scheme = components.scheme, ["http", "https"].contains(scheme)
        else { throw ProbeOptionError("the signal server URL \(base) is not an http:// or https:// URL") }
        return SignalServerTarget(
            url: base.hasSuffix("/") ? String(base.dropLast()) : base, host: host, port: components.port ?? (scheme == "https" ? 443 : 80),
            token: token ?? signal?.token, secretFile: signal?.secretFile ?? PathText.join(context.dataDirectory, "signal-secret"))
    }

    var authorization: [String] { token.map { ["Authorization: Bearer \($0)"] } ?? [] }

    /// The node's signal secret, if it has registered before (the file the discovery backend keeps).
    func secret() -> String? {
        guard let text = try? String(contentsOfFile: secretFile, encoding: .utf8) else { return nil }
        let secret = text.trimmingWhitespace
        return secret.isEmpty ? nil : secret
    }

    /// The server's STUN port, from `GET /healthz`.
    func stunPort(client: CurlHTTPClient, timeout: Duration) async throws -> Int? {
        let response = try await client.request("GET", url + "/healthz", headers: authorization, timeoutMilliseconds: max(100, Int(timeout.inMilliseconds)))
        guard response.status == 200,
              let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        else { return nil }
        return object["stun_port"] as? Int
    }
}

/// A probe option that cannot work.
public struct ProbeOptionError: AgentFlowError {
    public let message: String
    public var code: String { "probe_option" }
    public init(_ message: String) { self.message = message }
}
