import AgentFlowCore
import AgentFlowGRPC

import AgentFlowInMemory
import AgentFlowProto
import AgentFlowTCP
import AgentFlowTLS
import AgentFlowTransportKit
import Foundation
import Logging
import Synchronization
import Testing
import SwiftProtobuf

/// Every transport the conformance suite runs against. A new transport gets
/// the whole suite by adding one case here (and its line in `make`).
enum TransportKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case memory, tcp, grpc

    var description: String { rawValue }
    var usesSockets: Bool { self != .memory }

    /// Short timers so failure cases finish quickly.
    static let testOptions = SocketLinkOptions(
        maxMessageBytes: 4 * 1024 * 1024, keepaliveInterval: .milliseconds(200), deadPeerTimeout: .seconds(4),
        handshakeTimeout: .seconds(5), connectTimeout: .seconds(5))

    func make(node: String, pki: TestPKI, network: InMemoryNetwork, security: TransportSecurity? = nil,
              options: SocketLinkOptions = Self.testOptions) throws -> any Transport {
        let security = try security ?? pki.security(for: node)
        let logger = Logger(label: "test.\(rawValue).\(node)")
        switch self {
        case .memory:
            return InMemoryTransport(localNodeID: NodeID(node)!, listenAddress: HostPort(host: "mem-\(node)", port: 0), network: network,
                                     queueCapacity: 64, maxMessageBytes: options.maxMessageBytes)
        case .tcp:
            return try TCPTransport(listenAddress: HostPort(host: "127.0.0.1", port: 0), security: security, options: options, logger: logger)
        case .grpc:
            return try GRPCTransport(listenAddress: HostPort(host: "127.0.0.1", port: 0), security: security, options: options, logger: logger)

        }
    }
}

/// Drops every link with no clean end, as a killed process would.
func crash(_ transport: any Transport) {
    switch transport {
    case let memory as InMemoryTransport: memory.crash()
    case let socket as any SocketTransport: socket.crash()

    default: preconditionFailure("no crash hook for \(type(of: transport))")
    }
}

/// A throwaway cluster PKI in a temporary directory: a CA, node certificates
/// on demand, and the bad certificates the refusal tests need.
final class TestPKI: Sendable {
    let directory: String
    let ca: CertificateAuthority.Issued

    init() throws {
        directory = NSTemporaryDirectory() + "agentflow-pki-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateAuthority.makeCA()
        try write("ca.pem", ca.certificatePEM)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    var caFile: String { directory + "/ca.pem" }

    func write(_ name: String, _ contents: String) throws {
        try contents.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
    }

    /// mTLS files for `node`, issued by this PKI's CA (or another CA, or with a given validity).
    func security(for node: String, issuer: CertificateAuthority.Issued? = nil, validity: CertificateAuthority.Validity = .days(30),
                  commonName: String? = nil, trustedCA: String? = nil) throws -> TransportSecurity {
        let issuer = issuer ?? ca
        let tag = "\(node)-\(UUID().uuidString.prefix(6))"
        let issued = try CertificateAuthority.issueNodeCertificate(
            nodeID: NodeID(commonName ?? node) ?? NodeID("x")!, caCertificatePEM: issuer.certificatePEM,
            caPrivateKeyPEM: issuer.privateKeyPEM, validity: validity)
        try write("\(tag).pem", issued.certificatePEM)
        try write("\(tag).key", issued.privateKeyPEM)
        return .mutualTLS(MutualTLSFiles(caCertificateFile: trustedCA ?? caFile, certificateFile: "\(directory)/\(tag).pem", privateKeyFile: "\(directory)/\(tag).key"))
    }

    /// Certificate and key files (paths) for `node`, for tools like `openssl s_client` and grpcio.
    func files(for node: String) throws -> MutualTLSFiles {
        guard case .mutualTLS(let files) = try security(for: node) else { fatalError() }
        return files
    }
}

/// A numbered envelope (a task log line) of roughly `padding` bytes.
func message(_ number: UInt64, padding: Int = 0) -> Envelope {
    var envelope = Envelope()
    envelope.taskLog = .with {
        $0.header.sequence = number
        $0.task = "t"
        if padding > 0 { $0.line = Data(repeating: UInt8(ascii: "x"), count: padding) }
    }
    return envelope
}

struct TimeoutError: Error, CustomStringConvertible {
    let duration: Duration
    var description: String { "timed out after \(duration)" }
}

/// Runs `body`, failing with `TimeoutError` if it takes longer than `duration`.
/// The body must honour cancellation (links' reads and writes do).
func withTimeout<T: Sendable>(
    _ duration: Duration = .seconds(10), _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: duration)
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw TimeoutError(duration: duration)
        }
        group.cancelAll()
        return value
    }
}

/// Collects the links a listening transport accepts. Polls rather than
/// awaiting an AsyncStream, whose cancellation (a timed-out wait) would end it.
final class AcceptedLinks: Sendable {
    private let links = Mutex<[MeshStream]>([])

    func add(_ link: MeshStream) { links.withLock { $0.append(link) } }

    /// The next accepted link, or nil if none arrives within `timeout`.
    func next(timeout: Duration = .seconds(5)) async -> MeshStream? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let link = links.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return link }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}

/// A listening transport whose accepted links are handed to the test; each
/// link's handler task stays alive until the link's inbound ends.
struct Listener: Sendable {
    let transport: any Transport
    let address: HostPort
    let accepted: AcceptedLinks
    let task: Task<Void, any Error>

    static func start(_ transport: any Transport) async throws -> Listener {
        let accepted = AcceptedLinks()
        let task = Task {
            try await transport.listen { link in
                accepted.add(link)
            }
        }
        let address = try await transport.listeningAddress()
        return Listener(transport: transport, address: address, accepted: accepted, task: task)
    }

    func stop() async {
        transport.beginGracefulShutdown()
        let task = task
        let stopped = await finishes(within: .seconds(5)) { _ = try? await task.value }
        if !stopped { Issue.record("listen did not return within 5 s of beginGracefulShutdown") }
    }
}

/// Whether `body` finishes within `duration`. Unlike `withTimeout`, it does
/// not wait for a body that ignores cancellation: the check itself cannot hang.
func finishes(within duration: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
    let done = AsyncStream<Bool>.makeStream()
    let work = Task {
        await body()
        done.continuation.yield(true)
    }
    let timer = Task {
        try? await Task.sleep(for: duration)
        done.continuation.yield(false)
    }
    var iterator = done.stream.makeAsyncIterator()
    let result = await iterator.next() ?? false
    timer.cancel()
    if !result { work.cancel() }
    return result
}
