import AgentFlowCore
import AgentFlowGRPC
import AgentFlowProto
import AgentFlowTCP
import AgentFlowTLS
import AgentFlowTransportKit
import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import SwiftProtobuf

/// One link, both ends in this process on 127.0.0.1: streaming throughput
/// (messages/s, MB/s) and ping-pong RTT over one stream, per transport, with
/// mTLS on, and a raw TCP echo (no TLS, no framing library) as the floor.
struct LinkBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "link", abstract: "Throughput and RTT of one link per transport.")

    @Option(help: "Transports to run, comma separated: raw, tcp, grpc.")
    var transports: String = "raw,tcp,grpc"

    @Option(help: "Message payload sizes in bytes, comma separated.")
    var sizes: String = "200,65536"

    @Option(help: "Seconds of streaming per transport and size.")
    var seconds: Double = 3

    @Option(help: "Ping-pong round trips per transport.")
    var roundTrips: Int = 20_000

    @Option(help: "Run the client's ping-pong loop on the link's event loop (true, as the server's link handlers run) or on the global pool (false).")
    var onLoop = true

    @Option(help: "Times one-way transfers of a snapshot this large (one origin, 1 KiB log lines) per transport; 0 skips it.")
    var snapshotBytes = 1 << 20

    @Option(help: "Snapshot transfers to time per transport (after 5 unmeasured).")
    var snapshots = 100

    @Flag(help: "Turn TLS off (tls.mode: off) for the AgentFlow transports.")
    var plaintext = false

    @Option(help: """
        Hold a 0 µs PM QoS request on /dev/cpu_dma_latency while measuring (true), as latency \
        benchmarks such as cyclictest do: idle vCPUs then poll instead of halting, so a round trip \
        measures the link rather than the hypervisor's wake-up. Needs root; false measures an idle machine as is.
        """)
    var holdCPUAwake = true

    func run() async throws {
        let pki = try BenchPKI()
        let qos = holdCPUAwake ? CPUWakeLatencyRequest() : nil
        print("link benchmark: one link on 127.0.0.1, both ends in one process, \(plaintext ? "PLAINTEXT" : "mTLS (TLS 1.3, P-256)")")
        print("idle vCPUs: \(qos?.description ?? "as configured (no PM QoS request)")")
        defer { withExtendedLifetime(qos) {} }
        print("| transport | payload | messages/s | MB/s | RTT p50 | RTT p99 |")
        print("|---|---:|---:|---:|---:|---:|")
        for transport in transports.split(separator: ",").map(String.init) {
            for (index, size) in sizes.split(separator: ",").compactMap({ Int($0) }).enumerated() {
                // Round trips are timed once per transport, with 200-byte messages, alongside the first size.
                let measureRTT = index == 0
                let (rate, megabytes): (Double, Double)
                var rtt: (p50: Double, p99: Double)?
                if transport == "raw" {
                    (rate, megabytes) = try await RawTCPEcho.stream(size: size, seconds: seconds)
                    if measureRTT { rtt = try await RawTCPEcho.pingPong(size: 200, count: roundTrips, onLoop: onLoop) }
                } else {
                    let pair = try await TransportPair(kind: transport, pki: pki, plaintext: plaintext)
                    (rate, megabytes) = try await pair.stream(size: size, seconds: seconds)
                    if measureRTT {
                        rtt = try await withTaskExecutorPreference(onLoop ? pair.link.executor : nil) {
                            try await pair.pingPong(size: 200, count: roundTrips)
                        }
                    }
                    await pair.stop()
                }
                let rttText = rtt.map { String(format: "%.0f µs | %.0f µs", $0.p50, $0.p99) } ?? "– | –"
                print(String(format: "| %@ | %d B | %.0f | %.1f | %@ |", transport, size, rate, megabytes, rttText))
            }
        }
        guard snapshotBytes > 0 else { return }
        print("")
        print("Snapshot transfer: one `Snapshot` envelope of \(snapshotBytes) bytes of log lines, written until the echo of a marker sent after it arrives")
        print("| transport | snapshot | transfers | p50 | p99 | max |")
        print("|---|---:|---:|---:|---:|---:|")
        for transport in transports.split(separator: ",").map(String.init) where transport != "raw" {
            let pair = try await TransportPair(kind: transport, pki: pki, plaintext: plaintext)
            let times = try await pair.snapshots(bytes: snapshotBytes, count: snapshots)
            await pair.stop()
            print(String(format: "| %@ | %d B | %d | %.2f ms | %.2f ms | %.2f ms |", transport, snapshotBytes, times.count,
                         times[times.count / 2], times[times.count * 99 / 100], times.last!))
        }
    }
}

/// Times `count` round trips after 1,000 unmeasured warm-up ones; p50 and p99 in µs.
func timeRoundTrips(count: Int, _ roundTrip: () async throws -> Void) async throws -> (p50: Double, p99: Double) {
    var samples: [Double] = []
    samples.reserveCapacity(count)
    for index in 0..<(count + 1_000) {
        let start = ContinuousClock.now
        try await roundTrip()
        if index >= 1_000 { samples.append((ContinuousClock.now - start).seconds * 1_000_000) }
    }
    samples.sort()
    return (samples[samples.count / 2], samples[samples.count * 99 / 100])
}

/// A throwaway CA; node certificates are issued on first use.
struct BenchPKI {
    let directory: String
    let ca: CertificateAuthority.Issued

    init() throws {
        directory = NSTemporaryDirectory() + "agentflow-bench-pki-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateAuthority.makeCA()
        try ca.certificatePEM.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
    }

    func security(_ node: String) throws -> TransportSecurity {
        let certificate = "\(directory)/\(node).pem"
        if !FileManager.default.fileExists(atPath: certificate) {
            let issued = try CertificateAuthority.issueNodeCertificate(nodeID: NodeID(node)!, caCertificatePEM: ca.certificatePEM, caPrivateKeyPEM: ca.privateKeyPEM)
            try issued.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
            try issued.privateKeyPEM.write(toFile: "\(directory)/\(node).key", atomically: true, encoding: .utf8)
        }
        return .mutualTLS(MutualTLSFiles(caCertificateFile: directory + "/ca.pem", certificateFile: certificate, privateKeyFile: "\(directory)/\(node).key"))
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A server transport that echoes or counts, and a client link to it.
struct TransportPair {
    let server: any Transport
    let client: any Transport
    let link: MeshStream
    let serverTask: Task<Void, any Error>

    init(kind: String, pki: BenchPKI, plaintext: Bool) async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var options = SocketLinkOptions.defaults
        options.maxMessageBytes = 4 << 20
        func make(_ node: String) throws -> any Transport {
            let security: TransportSecurity = plaintext ? .plaintext : try pki.security(node)
            let address = HostPort(host: "127.0.0.1", port: 0)
            switch kind {
            case "tcp": return try TCPTransport(listenAddress: address, security: security, options: options, logger: logger)
            case "grpc": return try GRPCTransport(listenAddress: address, security: security, options: options, logger: logger)
            default: throw ValidationError("unknown transport \(kind): raw, tcp or grpc")
            }
        }
        server = try make("bench-server")
        client = try make("bench-client")
        let server = server
        serverTask = Task {
            // Answers only messages of task "echo": a stream ends with one, so its
            // answer proves that everything before it arrived (links are ordered).
            try await server.listen { link in
                do {
                    for try await envelope in link.inbound where envelope.taskLog.task == "echo" {
                        try await link.outbound.write(envelope)
                    }
                } catch {}
            }
        }
        let address = try await server.listeningAddress()
        link = try await client.connect(to: address, expectedPeer: nil)
    }

    /// Streams one way for about `seconds`, then waits for the echo of a final marker.
    func stream(size: Int, seconds: Double) async throws -> (Double, Double) {
        var envelope = Envelope()
        envelope.taskLog = .with { $0.line = Data(repeating: UInt8(ascii: "x"), count: max(0, size - 8)) }
        var marker = Envelope()
        marker.taskLog = .with { $0.task = "echo" }
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        var sent = 0
        while ContinuousClock.now < deadline {
            for _ in 0..<256 { try await link.outbound.write(envelope) }
            sent += 256
        }
        try await link.outbound.write(marker)
        var iterator = link.inbound.makeAsyncIterator()
        _ = try await iterator.next()
        let elapsed = (ContinuousClock.now - start).seconds
        return (Double(sent) / elapsed, Double(sent * size) / elapsed / 1_000_000)
    }

    /// Sends a snapshot of about `bytes` (one origin's state with 1 KiB log lines) and a
    /// marker after it; the time until the marker's echo is back, in ms, sorted.
    func snapshots(bytes: Int, count: Int) async throws -> [Double] {
        var state = Agentflow_Mesh_V1_NodeState()
        state.origin = "bench-server"
        state.incarnation = 1
        state.lastSequence = UInt64(bytes / 1_024)
        state.recentLogs = (0..<max(1, bytes / 1_024)).map { index in
            Agentflow_Mesh_V1_TaskLog.with {
                $0.task = "job-\(index % 8)"
                $0.header.origin = "bench-server"
                $0.header.sequence = UInt64(index + 1)
                $0.line = Data(repeating: UInt8(ascii: "a") + UInt8(index % 26), count: 1_024 - 48)
            }
        }
        var snapshot = Envelope()
        snapshot.snapshot.nodes = [state]
        var marker = Envelope()
        marker.taskLog = .with { $0.task = "echo" }
        var iterator = link.inbound.makeAsyncIterator()
        var times: [Double] = []
        for index in 0..<(count + 5) {
            let start = ContinuousClock.now
            try await link.outbound.write(snapshot)
            try await link.outbound.write(marker)
            _ = try await iterator.next()
            if index >= 5 { times.append((ContinuousClock.now - start).seconds * 1_000) }
        }
        return times.sorted()
    }

    func pingPong(size: Int, count: Int) async throws -> (p50: Double, p99: Double) {
        var envelope = Envelope()
        envelope.taskLog = .with {
            $0.task = "echo"
            $0.line = Data(repeating: UInt8(ascii: "x"), count: max(0, size - 16))
        }
        var iterator = link.inbound.makeAsyncIterator()
        return try await timeRoundTrips(count: count) {
            try await link.outbound.write(envelope)
            _ = try await iterator.next()
        }
    }

    func stop() async {
        await link.outbound.finish()
        client.beginGracefulShutdown()
        server.beginGracefulShutdown()
        _ = try? await serverTask.value
    }
}


/// A PM QoS request for 0 µs of CPU wake-up latency, held while this object lives.
final class CPUWakeLatencyRequest: CustomStringConvertible {
    private let descriptor: Int32

    init?() {
        let descriptor = open("/dev/cpu_dma_latency", O_WRONLY)
        guard descriptor >= 0 else { return nil }
        var zero: Int32 = 0
        guard write(descriptor, &zero, 4) == 4 else {
            close(descriptor)
            return nil
        }
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    var description: String { "kept polling (PM QoS 0 µs on /dev/cpu_dma_latency)" }
}
