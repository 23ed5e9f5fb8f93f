public import AgentFlowCore
import AgentFlowSTUN
import AgentFlowTLS
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import Logging

/// The `signal` discovery backend: registers with a signal server, keeps the
/// registration alive, and follows `/list`.
///
/// - Heartbeats go over STUN/UDP when the server offers it (a binding request
///   with the node's short-term credentials); a STUN heartbeat that gets no
///   authenticated answer falls back to REST `/heartbeat`, whose "unknown
///   node" answer (evicted, or the server restarted) triggers re-registration.
/// - The STUN-mapped address is this node's address as the server sees it;
///   when it is a host the node does not already advertise, it is added as a
///   candidate endpoint (same ports) and the node re-registers.
/// - `/list` is fetched with `?since=` and `If-None-Match` only when the
///   registry moved: every heartbeat answer (STUN or REST) carries the
///   registry's revision, so a quiet cluster costs no poll at all, and a
///   change is seen at the next heartbeat. The least time between two fetches
///   is `poll_interval` or the server's `min_poll_interval_seconds`, whichever
///   is longer: the server spreads a budget of fetches over its fleet, so its
///   load stays bounded under churn. Without a revision in the answers (an
///   older server), `/list` is polled every `poll_interval`.
/// - While the server is unreachable the last known peers are repeated as
///   `degraded`, with backoff and jitter between attempts; when it returns the
///   node registers again by itself.
/// - The node's secret is made once and kept in `secret_file` (0600), so a
///   restarted node can re-register its own id while its old record lives.
public struct SignalDiscovery: Discovery {
    public let name = SignalDiscoveryModule.name
    public let options: SignalDiscoveryModule.Options
    public let secretFile: String
    let logger: Logger

    public init(options: SignalDiscoveryModule.Options, secretFile: String, logger: Logger = Logger(label: "agentflow.discovery.signal")) {
        self.options = options
        self.secretFile = secretFile
        self.logger = logger
    }

    public func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
        let session = SignalSession(discovery: self, local: local, continuation: continuation)
        let task = Task {
            do {
                try await session.run()
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Reads the node's secret, or makes and stores one.
    func loadOrCreateSecret() throws -> String {
        if let text = try? String(contentsOfFile: secretFile, encoding: .utf8) {
            let secret = text.trimmingWhitespace
            if (16...128).contains(secret.utf8.count) { return secret }
        }
        let secret = try OpenSSLLibrary.randomBytes(32).map(\.hexByte).joined()
        let directory = PathText.parent(of: secretFile)
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        guard FileManager.default.createFile(atPath: secretFile, contents: Data((secret + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw SignalDiscoveryError("cannot write the node's signal secret to \(secretFile): check the data folder's permissions")
        }
        return secret
    }
}

struct SignalDiscoveryError: AgentFlowError {
    let message: String
    init(_ message: String) { self.message = message }
    var code: String { "signal_discovery" }
}

/// One run of the backend: its state between requests.
private final class SignalSession: Sendable {
    let discovery: SignalDiscovery
    let local: LocalAnnouncement
    let continuation: AsyncThrowingStream<PeerSetUpdate, any Error>.Continuation

    init(discovery: SignalDiscovery, local: LocalAnnouncement, continuation: AsyncThrowingStream<PeerSetUpdate, any Error>.Continuation) {
        self.discovery = discovery
        self.local = local
        self.continuation = continuation
    }

    func run() async throws {
        let options = discovery.options
        let logger = discovery.logger
        let secret = try discovery.loadOrCreateSecret()
        let stunPassword = try OpenSSLLibrary.sha256(Array(secret.utf8)).map(\.hexByte).joined()
        let client = SignalClient(baseURL: options.url, token: options.token, timeoutMilliseconds: Int(options.requestTimeout.duration.inMilliseconds), http: CurlHTTPClient())
        let serverHost = URLComponents(string: options.url)?.host ?? "127.0.0.1"
        let backoff = (base: 0.5, maximum: 30.0)
        let clock = ContinuousClock()

        var endpoints = local.endpoints
        var registration: SignalClient.Registration?
        var nodes: [String: SignalClient.Node] = [:]
        var revision: UInt64?
        var etag: String?
        var failures = 0
        var lastYield: PeerSetUpdate?
        var nextHeartbeat = clock.now
        var nextPoll = clock.now
        var lastPoll: ContinuousClock.Instant?
        var registeredOnce = false
        var serverMinimumPollSeconds = 0
        var pollInterval: Duration { max(options.pollInterval.duration, .seconds(serverMinimumPollSeconds)) }

        /// A heartbeat answer said which revision the registry is at, which is what a
        /// conditional poll would have asked. Unchanged: that was the poll, so the
        /// next is pushed a `poll_interval` away (while answers keep coming, none is
        /// sent). Moved: fetch now, or once `poll_interval` has passed since the
        /// last fetch.
        func heard(_ state: RegistryState?) {
            guard let state else { return }
            serverMinimumPollSeconds = Int(state.minPollIntervalSeconds)
            guard let known = revision else { return }
            let seen = state.revision
            let now = clock.now
            if seen == known {
                nextPoll = max(nextPoll, now + pollInterval * Double.random(in: 0.9...1.1))
            } else {
                nextPoll = min(nextPoll, max(now, (lastPoll ?? now) + pollInterval))
            }
        }

        func yield(_ health: PeerSetUpdate.Health) {
            let peers = nodes.values.compactMap { node -> DiscoveredPeer? in
                guard let id = NodeID(node.nodeID), id != local.nodeID else { return nil }
                let endpoints = node.endpoints.compactMap { endpoint -> DiscoveredEndpoint? in
                    guard NodeID.isValid(endpoint.transport), (1...65_535).contains(endpoint.port) else { return nil }
                    return DiscoveredEndpoint(transport: endpoint.transport, address: HostPort(host: endpoint.host, port: endpoint.port))
                }
                return DiscoveredPeer(nodeID: id, displayName: node.name, endpoints: endpoints, labels: node.labels)
            }.sorted { $0.nodeID < $1.nodeID }
            let update = PeerSetUpdate(peers: peers, health: health)
            if update != lastYield {
                continuation.yield(update)
                lastYield = update
            }
        }

        func failed(_ error: any Error, doing what: String) async {
            failures += 1
            let ceiling = min(backoff.maximum, backoff.base * Double(1 << min(failures - 1, 10)))
            let delay = ceiling / 2 + Double.random(in: 0...(ceiling / 2))
            if failures == 1 || failures % 10 == 0 {
                logger.warning("signal server \(options.url): \(what) failed: \(error); keeping \(nodes.count) known node(s), retrying in \(delay.fixed(1))s")
            }
            yield(.degraded(reason: "\(what) failed: \(error)"))
            try? await Task.sleep(for: .milliseconds(Int64(delay * 1_000)))
        }

        while !Task.isCancelled {
            // Register (again) when not registered: at start, after eviction, after the server came back empty.
            guard let current = registration else {
                do {
                    registration = try await client.register(local, endpoints: endpoints, secret: secret)
                    serverMinimumPollSeconds = registration!.minPollIntervalSeconds ?? 0
                    logger.info("registered with the signal server \(options.url) as \(local.nodeID)\(registeredOnce ? " (again)" : "") with \(endpoints.map(\.description).joined(separator: ", "))")
                    registeredOnce = true
                    failures = 0
                    nextHeartbeat = clock.now + .milliseconds(Int64(registration!.heartbeatIntervalSeconds * 1_000))
                    nextPoll = clock.now
                } catch {
                    await failed(error, doing: "registration")
                }
                continue
            }

            let now = clock.now
            if now >= nextHeartbeat {
                var alive = false
                var mapped: String?
                if options.heartbeat != .rest, let stunPort = current.stunPort {
                    if let answer = try? await STUNClient(timeout: .seconds(2), retransmitInterval: .milliseconds(400))
                        .bind(to: HostPort(host: serverHost, port: stunPort), credentials: .init(username: local.nodeID.rawValue, password: stunPassword)),
                       answer.authenticated {
                        alive = true
                        mapped = answer.mappedAddress.ipDescription
                        heard(answer.registry)
                    }
                }
                if !alive {
                    do {
                        switch try await client.heartbeat(nodeID: local.nodeID, secret: secret) {
                        case .alive(let state):
                            alive = true
                            heard(state)
                        case .unknownNode:
                            logger.info("the signal server no longer knows \(local.nodeID) (evicted, or it restarted): registering again")
                            registration = nil
                            continue
                        }
                    } catch {
                        await failed(error, doing: "heartbeat")
                        continue
                    }
                }
                if let mapped, options.advertiseMappedAddress, !endpoints.contains(where: { $0.address.host == mapped }) {
                    let candidates = local.endpoints.map { DiscoveredEndpoint(transport: $0.transport, address: HostPort(host: mapped, port: $0.address.port)) }
                    endpoints = Array((local.endpoints + candidates).prefix(16))
                    logger.info("the signal server sees this node at \(mapped): advertising it as a candidate too")
                    registration = nil  // re-register with the new candidate
                    continue
                }
                failures = 0
                nextHeartbeat = clock.now + .milliseconds(Int64(current.heartbeatIntervalSeconds * 1_000))
            }

            if clock.now >= nextPoll {
                lastPoll = clock.now
                do {
                    if let (list, newTag) = try await client.list(since: revision, etag: etag) {
                        if list.full { nodes = [:] }
                        for node in list.nodes { nodes[node.nodeID] = node }
                        for id in list.removed { nodes.removeValue(forKey: id) }
                        revision = list.revision
                        etag = newTag
                        // The server lost its records (restarted with a memory store) or evicted us: register again.
                        if list.full && nodes[local.nodeID.rawValue] == nil {
                            logger.info("this node is missing from the signal server's list: registering again")
                            registration = nil
                        }
                    }
                    failures = 0
                    yield(.healthy)
                } catch {
                    await failed(error, doing: "polling /list")
                    continue
                }
                nextPoll = clock.now + pollInterval * Double.random(in: 0.9...1.1)
            }

            let wake = min(nextHeartbeat, nextPoll)
            if wake > clock.now { try? await Task.sleep(until: wake, clock: clock) }
        }

        // Cancelled: the node is leaving; tell the server so peers stop seeing it at once.
        // In a task of its own: this one is cancelled, and a cancelled task's request would not be sent.
        if registration != nil {
            let nodeID = local.nodeID
            await Task {
                do {
                    try await client.deregister(nodeID: nodeID, secret: secret)
                    logger.info("deregistered from the signal server")
                } catch {
                    logger.debug("deregistration failed (the record will expire by itself): \(error)")
                }
            }.value
        }
    }
}

/// Registers the signal-server client as `signal`.
public enum SignalDiscoveryModule: DiscoveryModule {
    public enum HeartbeatPath: String, ConfigEnum, Sendable {
        /// STUN/UDP when the server offers it, REST otherwise.
        case auto
        case rest
    }

    public struct Options: Sendable, Hashable {
        /// The signal server's base URL. Default `http://127.0.0.1:7070`.
        public var url: String
        /// The cluster token (Bearer). Default none.
        public var token: String?
        /// The least time between two `/list` fetches, and the poll schedule when heartbeat answers carry no
        /// registry revision. Default 30s: heartbeat answers say when the registry moved, and a newcomer dials
        /// every member it lists at once, so members need not fetch often.
        public var pollInterval: ConfigDuration
        public var heartbeat: HeartbeatPath
        public var requestTimeout: ConfigDuration
        /// Add the STUN-mapped address to the advertised endpoints. Default true.
        public var advertiseMappedAddress: Bool
        /// Where the node's signal secret is kept. Default `<data_dir>/signal-secret`.
        public var secretFile: String?
    }

    public static let name = "signal"
    public static let summary = "a signal server: register, heartbeat (STUN/UDP or REST), poll /list"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(
            url: try section.value("url", default: "http://127.0.0.1:7070", validate: { url in
                guard let components = URLComponents(string: url), ["http", "https"].contains(components.scheme ?? ""), components.host?.isEmpty == false,
                      components.query == nil
                else { return "expected an http:// or https:// base URL, e.g. http://signal.example.com:7070" }
                return nil
            }).trimmingSuffix("/"),
            token: try section.optionalSecret("token"),
            pollInterval: try section.value("poll_interval", default: .seconds(30), in: .milliseconds(100) ... .seconds(3_600)),
            heartbeat: try section.value("heartbeat", default: .auto),
            requestTimeout: try section.value("request_timeout", default: .seconds(5), in: .milliseconds(100) ... .seconds(120)),
            advertiseMappedAddress: try section.value("advertise_mapped_address", default: true),
            secretFile: try section.filePath("secret_file", default: nil, mustExist: false))
    }

    public static func makeDiscovery(options: Options, context: DiscoveryContext) throws -> any Discovery {
        SignalDiscovery(options: options, secretFile: options.secretFile ?? PathText.join(context.dataDirectory, "signal-secret"),
                        logger: context.logger)
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        var text = self
        while text.hasSuffix(suffix) { text.removeLast(suffix.count) }
        return text
    }
}
