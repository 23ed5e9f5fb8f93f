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

/// Watches this node's own certificate: its expiry goes into the status and
/// `/metrics`, and the log warns when 30, 7 and 1 days are left (once per
/// step, and at start when already inside one), and says when it has expired.
/// The file is read again every hour; a renewal is also seen at once by
/// `CredentialReloadService`, which reloads the TLS material.
struct CertificateExpiryService: Service {
    let files: MutualTLSFiles
    let nodeID: NodeID
    let mesh: MeshNode
    let logger: Logger
    var checkInterval: Duration = .seconds(3_600)

    /// The warning steps, in days.
    static let steps = [30, 7, 1]

    /// The smallest step `secondsLeft` is inside (nil: more than 30 days left).
    static func step(secondsLeft: Int64) -> Int? {
        steps.last { secondsLeft <= Int64($0) * 86_400 }
    }

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var warnedStep: Int?
            var warnedExpired = false
            while !Task.isCancelled {
                if let notAfter = readExpiry() {
                    mesh.setCertificateExpiry(file: files.certificateFile, notAfterUnix: notAfter)
                    let left = notAfter - Int64(Date().timeIntervalSince1970)
                    let renew = "renew it: agentflow certs renew \(nodeID) --ca-dir <the CA folder> --out \(PathText.parent(of: files.certificateFile)), the master picks the new files up by itself within seconds (or on SIGHUP)"
                    if left <= 0 {
                        if !warnedExpired {
                            logger.error("this node's certificate \(files.certificateFile) expired on \(Timestamp.string(unixMicros: notAfter * 1_000_000)): peers refuse its links; \(renew)")
                            warnedExpired = true
                        }
                    } else if let step = Self.step(secondsLeft: left), step != warnedStep {
                        let days = Double(left) / 86_400
                        logger.warning("this node's certificate \(files.certificateFile) expires in \(days.fixed(1)) days (on \(Timestamp.string(unixMicros: notAfter * 1_000_000))); \(renew)")
                        warnedStep = step
                    } else if Self.step(secondsLeft: left) == nil {
                        warnedStep = nil
                        warnedExpired = false
                    }
                }
                try await Task.sleep(for: checkInterval)
            }
        }
    }

    private func readExpiry() -> Int64? {
        do {
            let pem = try String(contentsOfFile: files.certificateFile, encoding: .utf8)
            return try CertificateAuthority.expiry(ofPEM: pem)
        } catch {
            logger.warning("cannot read this node's certificate \(files.certificateFile) to check its expiry: \(error)")
            return nil
        }
    }
}
