import AgentFlowCore
import Synchronization

/// An in-process "network": listeners register under a `host:port`, and
/// `connect` pairs two bounded queues into a link. Many nodes in one process
/// (tests, examples) share `InMemoryNetwork.shared` unless given their own.
///
/// There is no TLS here: a link's `certifiedNodeID` is the id the dialling
/// transport was created with, which only code in the same process can set.
public final class InMemoryNetwork: Sendable {
    public static let shared = InMemoryNetwork()

    struct Listener: Sendable {
        let nodeID: NodeID
        /// Takes a new link and the queues behind it (so the listening side can end them on shutdown).
        let accept: @Sendable (MeshStream, [BoundedAsyncQueue<Envelope>]) -> Bool
    }

    private struct State {
        var listeners: [HostPort: Listener] = [:]
        var nextPort = 40_000
    }

    private let state = Mutex(State())

    public init() {}

    /// Registers a listener; port 0 picks a free one. Throws if the address is taken.
    func bind(_ address: HostPort, listener: Listener) throws -> HostPort {
        try state.withLock { state in
            var address = address
            if address.port == 0 {
                while state.listeners[HostPort(host: address.host, port: state.nextPort)] != nil { state.nextPort += 1 }
                address.port = state.nextPort
                state.nextPort += 1
            }
            guard state.listeners[address] == nil else {
                throw TransportError(.bindFailed, "in-memory address \(address) is already in use")
            }
            state.listeners[address] = listener
            return address
        }
    }

    func unbind(_ address: HostPort) {
        _ = state.withLock { $0.listeners.removeValue(forKey: address) }
    }

    func listener(at address: HostPort) -> Listener? {
        state.withLock { $0.listeners[address] }
    }
}
