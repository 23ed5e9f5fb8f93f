public import Logging

/// A way to carry `Envelope`s between two nodes: gRPC over HTTP/2, TCP
/// framing, in-memory. The mesh never knows which one it is using.
///
/// A transport authenticates links itself (it is handed a `TransportSecurity`)
/// and gives out `MeshStream`s only after that succeeded.
///
/// Lifecycle: `listen` runs for the node's whole life and returns after
/// `beginGracefulShutdown()` once in-flight handlers have finished. `connect`
/// may be called at any time while the transport is not shut down.
public protocol Transport: Sendable {
    /// The registered name (`grpc`, `tcp`, `memory`).
    var name: String { get }

    /// Accepts links until shut down, calling `handler` for each in its own
    /// task. Throws `TransportError(.bindFailed)` when it cannot listen.
    func listen(_ handler: @escaping @Sendable (MeshStream) async -> Void) async throws

    /// The address actually listened on (an ephemeral port resolved). Waits
    /// until `listen` has bound; throws if binding failed or the transport shut down.
    func listeningAddress() async throws -> HostPort

    /// Establishes an authenticated link. `expectedPeer`, when given, must be
    /// the identity the peer's certificate proves. Throws
    /// `TransportError(.unsupportedAddress)` for addresses it cannot reach.
    func connect(to address: HostPort, expectedPeer: NodeID?) async throws -> MeshStream

    /// Stops accepting, closes links gracefully, and makes `listen` return.
    func beginGracefulShutdown()

    /// Reads the node's TLS material (certificate, key, CA bundle) again:
    /// new handshakes use it, links already up stay. Throws, keeping the old
    /// material, when the files cannot be used. The default does nothing (a
    /// transport without credentials).
    func reloadCredentials() throws
}

extension Transport {
    public func reloadCredentials() throws {}
}

/// Everything a transport module needs to build a transport for this node.
public struct TransportContext: Sendable {
    public var localNodeID: NodeID
    /// Where to listen.
    public var listenAddress: HostPort
    /// How links are secured; shared by every transport.
    public var security: TransportSecurity
    /// The node's logger (it carries `node=`); a transport logs through it.
    public var logger: Logger

    public init(localNodeID: NodeID, listenAddress: HostPort, security: TransportSecurity, logger: Logger = Logger(label: "agentflow.transport")) {
        self.localNodeID = localNodeID
        self.listenAddress = listenAddress
        self.security = security
        self.logger = logger
    }
}

/// A transport as a registrable module. A third-party package conforms a type
/// to this and calls `registry.register(transport: MyTransportModule.self)`.
public protocol TransportModule: SendableMetatype {
    /// Module-specific options decoded from the `transport:` block.
    associatedtype Options: Sendable

    /// The name config uses in `transport.kind`.
    static var name: String { get }
    /// One line for `--help` and error messages.
    static var summary: String { get }

    /// Reads this module's keys from the `transport:` block (the core has
    /// already read `kind`, `listen` and `advertise`).
    static func decodeOptions(from section: ConfigSection) throws(ConfigError) -> Options

    static func makeTransport(options: Options, context: TransportContext) throws -> any Transport
}
