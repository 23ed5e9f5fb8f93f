public import AgentFlowCore

/// What the transport conformance suite needs from a transport under test.
///
/// A third-party transport passes the suite AgentFlow's own pass by describing
/// itself once and running every check:
///
/// ```swift
/// struct QUICSubject: TransportTestSubject {
///     let name = "quic"
///     func makeTransport(node: NodeID, security: TransportSecurity, limits: TransportTestLimits) throws -> any Transport {
///         try QUICTransport(listenAddress: HostPort(host: "127.0.0.1", port: 0), security: security,
///                           maxMessageBytes: limits.maxMessageBytes, deadPeerTimeout: limits.deadPeerTimeout)
///     }
///     func unreachableAddress() -> HostPort { HostPort(host: "127.0.0.1", port: 9) }
///     func crash(_ transport: any Transport) { (transport as! QUICTransport).dropAllLinks() }
/// }
///
/// @Test(arguments: TransportConformance.checks)
/// func conformance(_ check: TransportConformance.Check) async throws { try await check.run(QUICSubject()) }
/// ```
public protocol TransportTestSubject: Sendable {
    /// The transport's registered name: links must report it in `PeerIdentity.transport`.
    var name: String { get }

    /// Whether the transport can run without TLS (`TransportSecurity.plaintext`);
    /// the streaming check then also runs in plaintext. Default: true.
    var supportsPlaintext: Bool { get }

    /// Whether the transport proves peers' identities with certificates; the
    /// identity checks run only then. Default: true.
    var authenticatesPeers: Bool { get }

    /// A new transport for `node` that listens on an address of the subject's
    /// choosing (an ephemeral port on loopback), secured by `security`,
    /// refusing messages larger than `limits.maxMessageBytes`, and noticing a
    /// silent peer within `limits.deadPeerTimeout`.
    func makeTransport(node: NodeID, security: TransportSecurity, limits: TransportTestLimits) throws -> any Transport

    /// An address of this transport's kind where nothing listens.
    func unreachableAddress() -> HostPort

    /// Drops every link of `transport` without a clean end, as a killed process would.
    func crash(_ transport: any Transport)
}

extension TransportTestSubject {
    public var supportsPlaintext: Bool { true }
    public var authenticatesPeers: Bool { true }
}

/// The limits a check asks a transport for. Short timers keep failure cases quick.
public struct TransportTestLimits: Sendable, Hashable {
    /// The largest envelope a link takes (encoded bytes).
    public var maxMessageBytes: Int
    /// How often an idle link proves it is alive.
    public var keepaliveInterval: Duration
    /// A link whose peer is silent this long is dead.
    public var deadPeerTimeout: Duration

    public init(maxMessageBytes: Int = 4 << 20, keepaliveInterval: Duration = .milliseconds(200), deadPeerTimeout: Duration = .seconds(4)) {
        self.maxMessageBytes = maxMessageBytes
        self.keepaliveInterval = keepaliveInterval
        self.deadPeerTimeout = deadPeerTimeout
    }

    /// 4 MiB messages, keepalive every 200 ms, dead after 4 s.
    public static var defaults: TransportTestLimits { TransportTestLimits() }
}
