public import AgentFlowCore
import AgentFlowTLS
import Foundation

/// A throwaway cluster PKI in a temporary folder: a CA and node certificates
/// on demand, as `agentflow certs` makes them. The folder is removed when the
/// value is released.
public final class TestCertificates: Sendable {
    /// The folder holding `ca.pem` and the issued files.
    public let directory: String
    let caCertificatePEM: String
    let caPrivateKeyPEM: String

    public init() throws {
        directory = NSTemporaryDirectory() + "agentflow-testing-pki-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let ca = try CertificateAuthority.makeCA(commonName: "AgentFlow conformance CA")
        caCertificatePEM = ca.certificatePEM
        caPrivateKeyPEM = ca.privateKeyPEM
        try ca.certificatePEM.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Mutual-TLS files for `node`: a certificate of this CA whose common name is the node id.
    public func security(for node: NodeID) throws -> TransportSecurity {
        let tag = "\(node)-\(UUID().uuidString.prefix(6))"
        let issued = try CertificateAuthority.issueNodeCertificate(
            nodeID: node, caCertificatePEM: caCertificatePEM, caPrivateKeyPEM: caPrivateKeyPEM, validity: .days(2))
        let certificate = "\(directory)/\(tag).pem"
        let key = "\(directory)/\(tag).key"
        try issued.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
        try issued.privateKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        return .mutualTLS(MutualTLSFiles(caCertificateFile: directory + "/ca.pem", certificateFile: certificate, privateKeyFile: key))
    }
}
