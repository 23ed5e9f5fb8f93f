public import Hummingbird
import Logging
public import NIOCore

/// Per-request context: Hummingbird's core storage plus the peer's address
/// (the `observed_address` of a registering node).
public struct SignalRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The client's IP address as the server saw it. Only the address: the
    /// source port of an HTTP connection changes with every connection and says
    /// nothing about how to reach the node (STUN tells a node its mapped port).
    var observedAddress: String? { remoteAddress?.ipAddress }
}
