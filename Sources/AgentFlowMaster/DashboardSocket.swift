import AgentFlowCore
import AgentFlowCluster
import AgentFlowMesh
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import NIOWebSocket
import Logging
import NIOCore
import Synchronization
import AgentFlowHTTP

/// `/api/ws`: the dashboard's live feed. A snapshot on connect, then deltas
/// at most once per `frame` while things change, and a heartbeat every
/// `keepalive` while they do not. The client may send `{"type":"resync"}`
/// (it saw a gap in `seq`) to get a fresh snapshot.
///
/// Nothing queues per client: each message is built from a fresh reading
/// when the socket can take it, so a slow browser gets coarser deltas, and
/// one that takes no message for `writeTimeout` is dropped (its page
/// reconnects and starts from a snapshot).
struct DashboardSocket: Sendable {
    let mesh: MeshNode
    let cluster: ClusterNode
    let token: [UInt8]?
    let keepalive: Duration
    var frame: Duration = .milliseconds(16)
    var writeTimeout: Duration = .seconds(10)
    static let path = "/api/ws"
    /// What a client may send: `{"type":"resync"}` and nothing large.
    static let maxInboundBytes = 4_096

    /// Why an upgrade is refused, or nil when it may go ahead.
    static func refusal(token: [UInt8]?, path: String, authority: String?, headers: HTTPFields) -> APIError? {
        if let token {
            let header = headers[.authorization] ?? ""
            let bearer = header.hasPrefix("Bearer ") ? Array(header.utf8.dropFirst(7)) : nil
            let query = Self.queryItem("access_token", in: path).map { Array($0.utf8) }
            guard let given = bearer ?? query, ConstantTime.equals(given, token) else {
                return APIError(.unauthorized, "unauthorized", "missing or wrong api token: send `Authorization: Bearer <token>` or `?access_token=<token>`")
            }
        }
        // A browser names the page's origin; only a page this master served may read its feed.
        if let origin = headers[.origin] {
            let host = authority ?? ""
            guard origin == "http://\(host)" || origin == "https://\(host)" else {
                return APIError(.forbidden, "origin_refused", "origin \(origin) is not this master's (http://\(host)): the dashboard feed is only for pages this master serves")
            }
        }
        return nil
    }

    func shouldUpgrade(_ request: HTTPRequest) -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let path = request.path ?? ""
        guard path == Self.path || path.hasPrefix(Self.path + "?"), Self.refusal(token: token, path: path, authority: request.authority, headers: request.headerFields) == nil else { return .dontUpgrade }
        return .upgrade([:]) { inbound, outbound, context in
            try await serve(inbound: inbound, outbound: outbound, logger: context.logger)
        }
    }

    func reading() -> DashboardReading {
        DashboardReading(mesh: mesh.status(), origins: cluster.origins(), topology: mesh.topology(), commands: cluster.commandJournal(), localID: cluster.localID.rawValue, nowMicros: unixMicros())
    }

    func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger) async throws {
        // One wake signal, coalesced: an applied event, a tick, or a resync request.
        let (wakes, wake) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(1))
        let resync = Flag()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in cluster.updates() { wake.yield(true) }
            }
            group.addTask {
                // Links, RTT and discovery change without cluster events: look four times a second.
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(250))
                    wake.yield(true)
                }
            }
            group.addTask {
                for try await message in inbound.messages(maxSize: Self.maxInboundBytes) {
                    guard case .text(let text) = message, text.contains("\"resync\"") else {
                        // Close code 1003 with the reason, so the client can tell what it did wrong.
                        try? await outbound.close(.unacceptableData, reason: "the dashboard feed takes only {\"type\":\"resync\"}")
                        throw CancellationError()
                    }
                    resync.set()
                    wake.yield(true)
                }
                // The client closed: end the feed.
                throw CancellationError()
            }
            group.addTask {
                var state = DashboardFeedState(keepalive: keepalive)
                var lastSent = ContinuousClock.now
                try await send(state.snapshot(reading()), outbound, encoder)
                for await _ in wakes {
                    let sinceLast = ContinuousClock.now - lastSent
                    if sinceLast < frame { try await Task.sleep(for: frame - sinceLast) }
                    let message: DashboardMessage?
                    if resync.take() {
                        message = state.snapshot(reading())
                    } else if let delta = state.delta(reading()) {
                        message = delta
                    } else if ContinuousClock.now - lastSent >= keepalive {
                        message = state.heartbeat(nowMicros: unixMicros())
                    } else {
                        message = nil
                    }
                    guard let message else { continue }
                    try await send(message, outbound, encoder)
                    lastSent = ContinuousClock.now
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Writes one message, or gives the client up when it takes none for `writeTimeout`.
    func send(_ message: DashboardMessage, _ outbound: WebSocketOutboundWriter, _ encoder: JSONEncoder) async throws {
        let text = String(decoding: try encoder.encode(message), as: UTF8.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await outbound.writeTextMessage(text) }
            group.addTask {
                try await Task.sleep(for: writeTimeout)
                throw APIError(.requestTimeout, "slow_client", "the dashboard took no message for \(writeTimeout): dropped; it resyncs on reconnect")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    static func queryItem(_ name: String, in path: String) -> String? {
        guard let query = path.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.first.map(String.init) == name { return parts.count > 1 ? percentDecoded(parts[1]) : "" }
        }
        return nil
    }
}

/// `%XX` and `+` decoded; a malformed escape stays as it is.
func percentDecoded(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    var rest = Array(text.utf8)[...]
    while let byte = rest.popFirst() {
        if byte == UInt8(ascii: "%"), rest.count >= 2, let value = UInt8(String(decoding: rest.prefix(2), as: UTF8.self), radix: 16) {
            bytes.append(value)
            rest = rest.dropFirst(2)
        } else {
            bytes.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A set-once, take-once flag shared by the feed's tasks.
final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    func take() -> Bool { value.withLock { value in defer { value = false }; return value } }
}

extension HTTPServerBuilder {
    /// `.strictHTTP1()` plus the dashboard's WebSocket feed.
    static func masterHTTP(dashboard: DashboardSocket) -> HTTPServerBuilder {
        .init { responder in
            StrictHTTP1Channel(HTTP1WebSocketUpgradeChannel(
                responder: responder,
                // Only the small resync request comes in; deltas go out in fragments of this size.
                configuration: .init(ws: .init(maxFrameSize: 1 << 16, autoPing: .enabled(timePeriod: .seconds(30)), closeTimeout: .seconds(5), validateUTF8: true)),
                shouldUpgrade: { request, _, _ in dashboard.shouldUpgrade(request) }))
        }
    }
}

extension DashboardBundle {
    /// A static part of the page. `no-cache`: a restarted master may serve a newer bundle.
    static func response(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache", .init("X-Content-Type-Options")!: "nosniff"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
