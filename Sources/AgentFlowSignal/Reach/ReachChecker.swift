public import AgentFlowCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
import HTTPTypes
import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `POST /reach`: the signal server dials back to a node's P2P port with a TLS
/// ClientHello and says what answered, so a node learns whether the outside
/// can reach it (a port forward works, or is missing).
///
/// It can never be aimed at a third party:
/// - the caller is a registered node and proves it with its secret;
/// - only the request's own source IP is dialled: at endpoints without a
///   `host`, and at endpoints whose host is, or resolves to, that IP; any other
///   endpoint is reported `not_allowed` and never dialled, and a request with
///   nothing allowed is refused (403);
/// - one check per node per `reach.min_interval` (429 with Retry-After), and at
///   most `reach.max_concurrent` in flight over all nodes (503).
public final class ReachChecker: Sendable {
    public struct Result: Encodable, Sendable {
        var transport: String?
        var host: String
        var port: Int
        var outcome: String
        var detail: String
        var elapsedMs: Double
        enum CodingKeys: String, CodingKey { case transport, host, port, outcome, detail, elapsedMs = "elapsed_ms" }
    }

    public struct Response: Encodable, Sendable {
        var nodeID: String
        var sourceAddress: String
        var results: [Result]
        enum CodingKeys: String, CodingKey { case nodeID = "node_id", sourceAddress = "source_address", results }
    }

    struct Target {
        var transport: String?
        var host: String
        var port: Int
    }

    let registry: SignalRegistry
    let settings: SignalConfig.ReachSettings
    private let lastCheck = Mutex<[String: ContinuousClock.Instant]>([:])
    private let inFlight = Atomic<Int>(0)

    public init(registry: SignalRegistry, settings: SignalConfig.ReachSettings) {
        self.registry = registry
        self.settings = settings
    }

    static let maxTargets = 8

    func parse(_ body: some Collection<UInt8>) throws(JSONBodyError) -> (nodeID: String, secret: String, targets: [Target], own: [Target]) {
        var json = try StrictJSONObject.parse(body)
        let nodeID = try json.string("node_id", maxLength: 63)!
        guard NodeID.isValid(nodeID) else { throw .field("node_id", "\"\(nodeID)\" is not a node id: \(NodeID.rules)") }
        let secret = try json.string("secret", maxLength: 128)!
        var targets: [Target] = []
        var own: [Target] = []
        for var endpoint in try json.objects("endpoints", maxCount: Self.maxTargets) {
            let transport = try endpoint.string("transport", maxLength: 32, required: false)
            if let transport, !NodeID.isValid(transport) { throw .field("\(endpoint.path).transport", "expected a transport name like grpc or tcp") }
            let host = try endpoint.string("host", maxLength: 253, required: false)
            if let host, !SignalRegistry.isValidHost(host) { throw .field("\(endpoint.path).host", "expected a host name (letters, digits, . _ -) or an IP address") }
            let port = try endpoint.integer("port", in: 1...65_535)
            try endpoint.finish()
            if let host { targets.append(Target(transport: transport, host: host, port: port)) } else { own.append(Target(transport: transport, host: "", port: port)) }
        }
        try json.finish()
        guard !targets.isEmpty || !own.isEmpty else { throw .field("endpoints", "give at least one endpoint ({\"port\": N} dials this request's own address)") }
        return (nodeID, secret, targets, own)
    }

    /// Runs one request: authenticate, rate-limit, filter, dial.
    public func check(body: some Collection<UInt8>, sourceIP: String?) async throws -> Response {
        guard settings.enabled else { throw SignalAPIError(.notFound, "reach_disabled", "this signal server does not offer dial-back checks (reach.enabled is false)") }
        let request = try parse(body)
        guard let sourceIP else { throw SignalAPIError(.badRequest, "no_source", "the request's source address is unknown") }
        let digest = try await registry.store.secretDigest(of: request.nodeID)
        guard let digest else { throw SignalAPIError.unknownNode(request.nodeID) }
        guard ConstantTime.equals(Array(digest.utf8), Array(try SignalRegistry.digest(request.secret).utf8)) else { throw SignalAPIError.forbiddenSecret(request.nodeID) }

        // Which targets are the requester's own.
        var allowed: [Target] = request.own.map { Target(transport: $0.transport, host: sourceIP, port: $0.port) }
        var refused: [Result] = []
        for target in request.targets {
            let addresses = await Self.resolve(target.host)
            if addresses.contains(sourceIP) {
                allowed.append(target)
            } else {
                refused.append(Result(transport: target.transport, host: target.host, port: target.port, outcome: TLSDialBack.Outcome.notAllowed.rawValue,
                                      detail: "not dialled: \(target.host) is not this request's source address \(sourceIP)", elapsedMs: 0))
            }
        }
        guard !allowed.isEmpty else {
            throw SignalAPIError(.forbidden, "not_own_address", "reach dials back only to the requester's own address (\(sourceIP)); none of the endpoints is it")
        }

        let now = ContinuousClock.now
        let interval = settings.minInterval.duration
        let wait: Duration? = lastCheck.withLock { last in
            if let previous = last[request.nodeID], now - previous < interval { return interval - (now - previous) }
            last[request.nodeID] = now
            if last.count > 100_000 { last = last.filter { now - $0.value < interval } }
            return nil
        }
        if let wait {
            var error = SignalAPIError(.tooManyRequests, "rate_limited", "one reach check per node every \(settings.minInterval.configText); try again in \(Int(wait.inSeconds.rounded(.up))) s")
            error.retryAfterSeconds = Int(wait.inSeconds.rounded(.up))
            throw error
        }
        let running = inFlight.wrappingAdd(1, ordering: .relaxed).newValue
        defer { inFlight.wrappingSubtract(1, ordering: .relaxed) }
        guard running <= settings.maxConcurrent else {
            throw SignalAPIError(.serviceUnavailable, "busy", "too many reach checks in flight; try again shortly")
        }

        let dialer = TLSDialBack(timeout: settings.timeout.duration)
        let results = await withTaskGroup(of: (Int, Result).self) { group in
            for (index, target) in allowed.enumerated() {
                group.addTask {
                    let started = ContinuousClock.now
                    let (outcome, detail): (TLSDialBack.Outcome, String)
                    if let address = try? SocketAddress(ipAddress: sourceIP, port: target.port) {
                        (outcome, detail) = await dialer.dial(address)
                    } else {
                        (outcome, detail) = (.notAllowed, "\(sourceIP) is not an address this server can dial")
                    }
                    return (index, Result(transport: target.transport, host: target.host, port: target.port, outcome: outcome.rawValue, detail: detail,
                                          elapsedMs: ((ContinuousClock.now - started).inMilliseconds * 10).rounded() / 10))
                }
            }
            var collected: [(Int, Result)] = []
            for await item in group { collected.append(item) }
            return collected.sorted { $0.0 < $1.0 }.map(\.1)
        }
        return Response(nodeID: request.nodeID, sourceAddress: sourceIP, results: results + refused)
    }

    /// The IP addresses a host names (an IP literal names itself), off the event loop.
    static func resolve(_ host: String) async -> [String] {
        if let literal = try? SocketAddress(ipAddress: host, port: 0), let ip = literal.ipAddress { return [ip] }
        return (try? await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return [String]() }
            defer { freeaddrinfo(first) }
            var ips: [String] = []
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let entry = cursor {
                if let address = entry.pointee.ai_addr {
                    switch entry.pointee.ai_family {
                    case AF_INET: address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { if let ip = SocketAddress($0.pointee, host: host).ipAddress { ips.append(ip) } }
                    case AF_INET6: address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { if let ip = SocketAddress($0.pointee, host: host).ipAddress { ips.append(ip) } }
                    default: break
                    }
                }
                cursor = entry.pointee.ai_next
            }
            return ips
        }) ?? []
    }
}
