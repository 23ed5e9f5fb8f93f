public import AgentFlowCore
public import Logging

/// Discovery from DNS: every address `name` resolves to is a master listening
/// on `port`. DNS tells addresses, not node ids, so the addresses go out as
/// `PeerSetUpdate.unidentified`; the mesh learns who answers from the
/// certificate-checked Hello.
///
/// It resolves at once and then every `interval`. A failure (the name does not
/// resolve, the resolver is unreachable) is reported as `degraded` with the
/// last good set, never as the end of the stream; the set is repeated only
/// when something changed. Cancelling the consumer stops it.
public struct DNSDiscovery: Discovery {
    public let name = DNSDiscoveryModule.name
    public let hostname: String
    public let port: Int
    public let transport: String
    public let interval: Duration
    let resolver: any NameResolver
    let logger: Logger

    public init(name: String, port: Int, transport: String, interval: Duration, resolver: any NameResolver,
                logger: Logger = Logger(label: "agentflow.dns")) {
        self.hostname = name
        self.port = port
        self.transport = transport
        self.interval = interval
        self.resolver = resolver
        self.logger = logger
    }

    public func peerSets(announcing local: LocalAnnouncement) -> AsyncThrowingStream<PeerSetUpdate, any Error> {
        // Only the newest set matters to a consumer that fell behind.
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PeerSetUpdate.self, bufferingPolicy: .bufferingNewest(1))
        let task = Task { [self] in
            var lastGood: [DiscoveredEndpoint] = []
            var lastSent: PeerSetUpdate?
            while !Task.isCancelled {
                let update: PeerSetUpdate
                do {
                    let addresses = try await resolver.resolve(hostname)
                    guard !addresses.isEmpty else { throw NameResolutionError("\(hostname) resolves to no address") }
                    lastGood = Array(Set(addresses)).sorted().map { DiscoveredEndpoint(transport: transport, address: HostPort(host: $0, port: port)) }
                    update = PeerSetUpdate(peers: [], unidentified: lastGood.filter { !local.endpoints.contains($0) })
                } catch {
                    if Task.isCancelled { break }
                    update = PeerSetUpdate(peers: [], unidentified: lastGood.filter { !local.endpoints.contains($0) },
                                           health: .degraded(reason: "cannot resolve \(hostname): \(error)"))
                }
                if update != lastSent {
                    if case .degraded(let reason) = update.health { logger.warning("dns discovery: \(reason); keeping \(lastGood.count) address(es)") }
                    continuation.yield(update)
                    lastSent = update
                }
                try? await Task.sleep(for: interval)
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
