import AgentFlowCore
import AgentFlowMesh
import AgentFlowTLS
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads the node's TLS material without a restart: on `SIGHUP`, and when
/// the certificate, key or CA file changes on disk (checked every
/// `pollInterval`). Every transport then uses it for new handshakes; links
/// already up stay. A file caught half-written fails the reload, which keeps
/// the old material and is retried at the next change or check.
struct CredentialReloadService: Service {
    let files: MutualTLSFiles
    let transports: [any Transport]
    let mesh: MeshNode
    let logger: Logger
    var pollInterval: Duration = .seconds(2)

    /// What identifies a file's content on disk, cheaply.
    struct Stamp: Equatable {
        var size: Int
        var modified: Date
        var inode: Int
    }

    func stamps() -> [String: Stamp] {
        var result: [String: Stamp] = [:]
        for path in [files.certificateFile, files.privateKeyFile, files.caCertificateFile] {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { continue }
            result[path] = Stamp(size: (attributes[.size] as? Int) ?? -1, modified: (attributes[.modificationDate] as? Date) ?? .distantPast,
                                 inode: (attributes[.systemFileNumber] as? Int) ?? -1)
        }
        return result
    }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try? await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let (changes, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(1))
                group.addTask {
                    for await _ in signals { continuation.yield("SIGHUP") }
                }
                group.addTask {
                    var last = stamps()
                    while !Task.isCancelled {
                        try await Task.sleep(for: pollInterval)
                        let now = stamps()
                        if now != last {
                            let changed = now.keys.filter { now[$0] != last[$0] }.sorted()
                            last = now
                            continuation.yield("changed on disk: \(changed.joined(separator: ", "))")
                        }
                    }
                }
                for await reason in changes {
                    reload(because: reason)
                }
            }
        }
    }

    func reload(because reason: String) {
        do {
            for transport in transports { try transport.reloadCredentials() }
            var detail = ""
            if let pem = try? String(contentsOfFile: files.certificateFile, encoding: .utf8), let notAfter = try? CertificateAuthority.expiry(ofPEM: pem) {
                mesh.setCertificateExpiry(file: files.certificateFile, notAfterUnix: notAfter)
                detail = "; this node's certificate is valid until \(Timestamp.string(unixMicros: notAfter * 1_000_000))"
            }
            logger.info("reloaded the TLS material (\(reason)): new handshakes use it, links already up stay\(detail)")
        } catch {
            logger.error("cannot reload the TLS material (\(reason)): \(error); the previous certificate and CA stay in use")
        }
    }
}
