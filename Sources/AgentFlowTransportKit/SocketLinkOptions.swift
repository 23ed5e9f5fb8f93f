public import AgentFlowCore
public import NIOCore

/// The options every socket transport (`grpc`, `tcp`) reads from its
/// `transport:` block. Defaults suit a WAN mesh; tests shorten the timers.
public struct SocketLinkOptions: Sendable, Hashable {
    /// Largest envelope accepted or sent, in bytes. Default 4 MiB.
    public var maxMessageBytes: Int
    /// Send a keepalive ping after this long without traffic. Default 10s.
    public var keepaliveInterval: ConfigDuration
    /// Close a link that has received nothing for this long. Default 30s.
    public var deadPeerTimeout: ConfigDuration
    /// Close a connection whose TLS (and link) handshake has not finished by then. Default 10s.
    public var handshakeTimeout: ConfigDuration
    /// Give up a TCP connect after this long. Default 5s.
    public var connectTimeout: ConfigDuration
    /// Connections (accepted and dialled) held at once; an accepted one beyond it is
    /// closed at once, so a flood of half-open connections cannot exhaust memory. Default 1024.
    public var maxConnections: Int

    public static let defaults = SocketLinkOptions(
        maxMessageBytes: 4 * 1024 * 1024, keepaliveInterval: .seconds(10), deadPeerTimeout: .seconds(30),
        handshakeTimeout: .seconds(10), connectTimeout: .seconds(5))

    public init(maxMessageBytes: Int, keepaliveInterval: ConfigDuration, deadPeerTimeout: ConfigDuration,
                handshakeTimeout: ConfigDuration, connectTimeout: ConfigDuration, maxConnections: Int = 1_024) {
        self.maxMessageBytes = maxMessageBytes
        self.keepaliveInterval = keepaliveInterval
        self.deadPeerTimeout = deadPeerTimeout
        self.handshakeTimeout = handshakeTimeout
        self.connectTimeout = connectTimeout
        self.maxConnections = maxConnections
    }

    /// Reads the shared keys of a socket transport's block.
    public static func decode(from section: ConfigSection) throws(ConfigError) -> SocketLinkOptions {
        let defaults = Self.defaults
        let options = SocketLinkOptions(
            maxMessageBytes: try section.value("max_message_bytes", default: defaults.maxMessageBytes, in: 1_024...(64 * 1024 * 1024)),
            keepaliveInterval: try section.value("keepalive_interval", default: defaults.keepaliveInterval, in: .milliseconds(50) ... .seconds(3_600)),
            deadPeerTimeout: try section.value("dead_peer_timeout", default: defaults.deadPeerTimeout, in: .milliseconds(100) ... .seconds(7_200)),
            handshakeTimeout: try section.value("handshake_timeout", default: defaults.handshakeTimeout, in: .milliseconds(100) ... .seconds(120)),
            connectTimeout: try section.value("connect_timeout", default: defaults.connectTimeout, in: .milliseconds(100) ... .seconds(120)),
            maxConnections: try section.value("max_connections", default: defaults.maxConnections, in: 1...1_000_000))
        if options.deadPeerTimeout <= options.keepaliveInterval {
            throw ConfigError(
                .invalidValue, path: section.path.appending(key: "dead_peer_timeout"), value: options.deadPeerTimeout.configText,
                expected: "longer than keepalive_interval (\(options.keepaliveInterval.configText)), or an idle but healthy link would be closed",
                source: section.source)
        }
        return options
    }

    public var bridgeLimits: LinkBridge.Limits {
        LinkBridge.Limits(maxMessageBytes: maxMessageBytes)
    }
}

extension ConfigDuration {
    /// The same span as a NIO `TimeAmount`.
    public var timeAmount: TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
