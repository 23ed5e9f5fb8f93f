public import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowSTUN
import AgentFlowTLS
import NIOCore
import NIOPosix

/// `signal`: can this node use its signal server? Each step is timed, and
/// the report says which one fails: DNS resolution, TCP connect, the HTTP
/// API with the cluster token, and a STUN answer (authenticated with the
/// node's credentials when it has registered before).
public enum SignalProbeModule: ProbeModule {
    public struct Options: Sendable, Hashable {
        /// Default: the node's discovery URL.
        public var url: String?
        /// Default: the node's discovery token.
        public var token: String?

        public init(url: String? = nil, token: String? = nil) {
            self.url = url
            self.token = token
        }
    }

    public static let name = "signal"
    public static let summary = "the signal server step by step: DNS, TCP connect, API and token, authenticated STUN answer"

    public static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options {
        Options(url: try section.optionalValue("url"), token: try section.optionalSecret("token"))
    }

    public static func makeProbe(options: Options, context: ProbeContext) throws -> any Probe {
        SignalProbe(target: try SignalServerTarget.resolve(url: options.url, token: options.token, context: context), context: context)
    }
}

struct SignalProbe: Probe {
    let target: SignalServerTarget
    let context: ProbeContext
    var name: String { SignalProbeModule.name }

    func run() async throws -> ProbeReport {
        let target = self.target
        let context = self.context
        let name = self.name
        let facts = FactLog()
        return try await ProbeBudget.run(name: name, timeout: context.timeout, partial: facts) {
            func failed(_ step: String, _ why: String) async -> ProbeReport {
                await facts.add("failed_step", step)
                return ProbeReport(probe: name, outcome: .failed, summary: "\(step) failed: \(why)", facts: await facts.all)
            }
            let stepTimeout = min(context.timeout, .seconds(5))
            await facts.add("url", target.url)

            // 1. DNS.
            var clock = ContinuousClock.now
            let addresses = await Resolver.resolve(target.host)
            guard let address = addresses.first else { return await failed("dns", "\(target.host) does not resolve") }
            await facts.add("dns_ms", (ContinuousClock.now - clock).inMilliseconds.fixed(1))
            await facts.add("address", address)

            // 2. TCP.
            clock = ContinuousClock.now
            do {
                let socket = try SocketAddress(ipAddress: address, port: target.port)
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(.milliseconds(Int64(stepTimeout.inMilliseconds)))
                    .connect(to: socket).get()
                try? await channel.close()
            } catch {
                return await failed("tcp", "no connection to \(address):\(target.port): \(error)")
            }
            await facts.add("tcp_connect_ms", (ContinuousClock.now - clock).inMilliseconds.fixed(1))

            // 3. HTTP API and token.
            let client = CurlHTTPClient(maxIdleHandles: 0)
            clock = ContinuousClock.now
            let list: CurlEasyHandle.Response
            do {
                list = try await client.request("GET", target.url + "/list?since=9223372036854775807", headers: target.authorization,
                                                timeoutMilliseconds: Int(stepTimeout.inMilliseconds), maxBodyBytes: 16 << 20)
            } catch {
                return await failed("api", "GET /list: \(error)")
            }
            if list.status == 401 {
                return await failed("auth", target.token == nil
                    ? "the server wants a cluster token: set discovery.token (or probes.signal.token)"
                    : "the cluster token was refused: it differs from the server's auth.token")
            }
            guard list.status == 200 else { return await failed("api", "GET /list answered \(list.status)") }
            await facts.add("api_ms", (ContinuousClock.now - clock).inMilliseconds.fixed(1))
            await facts.add("token", target.token == nil ? "none needed" : "accepted")

            // 4. STUN.
            guard let stunPort = try? await target.stunPort(client: client, timeout: stepTimeout) else {
                await facts.add("stun", "off on this server")
                return ProbeReport(probe: name, outcome: .passed, summary: "the signal server at \(target.url) works (it offers no STUN, so heartbeats use REST)", facts: await facts.all)
            }
            let server = HostPort(host: address, port: stunPort)
            let stun = STUNClient(timeout: stepTimeout, retransmitInterval: .milliseconds(250))
            guard let plain = try? await stun.bind(to: server) else {
                return await failed("stun", "no STUN answer from \(server) (UDP blocked on the way?)")
            }
            await facts.add("stun_ms", plain.roundTrip.inMilliseconds.fixed(1))
            await facts.add("mapped_address", plain.mappedAddress.description)
            guard let secret = target.secret() else {
                await facts.add("stun_auth", "not tried: the node has not registered yet (no \(target.secretFile))")
                return ProbeReport(probe: name, outcome: .passed, summary: "the signal server at \(target.url) works; this node has not registered yet", facts: await facts.all)
            }
            let password = try OpenSSLLibrary.sha256(Array(secret.utf8)).map(\.hexByte).joined()
            clock = ContinuousClock.now
            guard let signed = try? await stun.bind(to: server, credentials: .init(username: context.localNodeID.rawValue, password: password)), signed.authenticated else {
                return await failed("stun_auth", "no authenticated STUN answer: the server does not know this node with this secret (evicted, or registered under another secret)")
            }
            await facts.add("stun_auth_ms", (ContinuousClock.now - clock).inMilliseconds.fixed(1))
            return ProbeReport(probe: name, outcome: .passed, summary: "the signal server at \(target.url) works: API, token and authenticated STUN", facts: await facts.all)
        }
    }
}

/// Facts gathered so far, so a probe that runs out of budget still says how far it got.
actor FactLog {
    private(set) var all: [ProbeReport.Fact] = []
    func add(_ name: String, _ value: String) { all.append(.init(name, value)) }
}

/// Host name resolution off the concurrency pool (getaddrinfo blocks).
enum Resolver {
    static func resolve(_ host: String) async -> [String] {
        if let literal = try? SocketAddress(ipAddress: host, port: 0), let ip = literal.ipAddress { return [ip] }
        return (try? await NIOThreadPool.singleton.runIfActive {
            guard let address = try? SocketAddress.makeAddressResolvingHost(host, port: 0), let ip = address.ipAddress else { return [String]() }
            return [ip]
        }) ?? []
    }
}
