import AgentFlowCore
import AgentFlowSTUN
import NIOCore
import NIOPosix
import Synchronization

/// Sends authenticated STUN binding requests for many nodes from one UDP
/// socket and matches answers by transaction id, as a fleet of nodes would.
final class UDPHeartbeatSender: Sendable {
    private let channel: any Channel
    private let remote: SocketAddress
    private let pending = PendingTable()

    init(server: HostPort) async throws {
        remote = try SocketAddress(ipAddress: server.host, port: server.port)
        let pending = self.pending
        channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AnswerHandler(pending: pending)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    deinit { channel.close(promise: nil) }

    /// Requests still unanswered (lost or refused).
    var outstanding: Int { pending.table.withLock { $0.count } }

    /// Sends one heartbeat; `completion` gets the answer's bytes.
    func send(nodeID: String, password: String, completion: @escaping @Sendable ([UInt8]?) -> Void) {
        let transactionID = (0..<12).map { _ in UInt8.random(in: 0...255) }
        guard let request = try? STUNClient.makeRequest(transactionID: transactionID, credentials: .init(username: nodeID, password: password)) else { return }
        pending.table.withLock { $0[transactionID] = completion }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: request)), promise: nil)
    }

    private final class AnswerHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let pending: PendingTable
        init(pending: PendingTable) { self.pending = pending }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let bytes = Array(envelope.data.readableBytesView)
            guard bytes.count >= 20 else { return }
            let id = Array(bytes[8..<20])
            let completion = pending.table.withLock { $0.removeValue(forKey: id) }
            completion?(bytes)
        }
    }
}

/// Callbacks of requests in flight, by transaction id.
final class PendingTable: Sendable {
    let table = Mutex<[[UInt8]: @Sendable ([UInt8]?) -> Void]>([:])
}
