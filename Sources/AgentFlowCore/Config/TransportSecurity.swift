/// How every link of a node is secured. Described once here; the TLS module
/// implements it and every transport takes it, so no transport calls OpenSSL itself.
public enum TransportSecurity: Sendable, Hashable {
    /// No encryption, no authentication. Only when config says
    /// `tls.mode: off`, and logged as a warning at start.
    case plaintext
    /// Mutual TLS: both sides present a certificate of the cluster CA, and a
    /// node's certificate names its node id.
    case mutualTLS(MutualTLSFiles)

    public var isPlaintext: Bool { self == .plaintext }
}

/// PEM files for mutual TLS.
public struct MutualTLSFiles: Sendable, Hashable {
    /// The cluster CA certificate(s) that peers must chain to.
    public var caCertificateFile: String
    /// This node's certificate (chain), issued for its node id.
    public var certificateFile: String
    /// This node's private key.
    public var privateKeyFile: String

    public init(caCertificateFile: String, certificateFile: String, privateKeyFile: String) {
        self.caCertificateFile = caCertificateFile
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
    }
}

extension TransportSecurity {
    enum Mode: String, ConfigEnum {
        case mtls
        case off
    }

    /// Decodes a `tls:` block. With `mode: mtls` and no paths, the files default
    /// to `<data_dir>/certs/{ca.pem,node.pem,node.key}` (where `agentflow certs`
    /// writes them); paths written explicitly must name existing files.
    static func decode(from section: ConfigSection, dataDirectory: String) throws(ConfigError) -> TransportSecurity {
        let mode = try section.value("mode", default: Mode.mtls)
        let certs = dataDirectory.hasSuffix("/") ? "\(dataDirectory)certs" : "\(dataDirectory)/certs"
        // filePath checks existence only for paths written explicitly; defaults may not exist yet.
        let ca = try section.filePath("ca_file", default: "\(certs)/ca.pem", mustExist: section.contains("ca_file"))
        let cert = try section.filePath("cert_file", default: "\(certs)/node.pem", mustExist: section.contains("cert_file"))
        let key = try section.filePath("key_file", default: "\(certs)/node.key", mustExist: section.contains("key_file"))
        try section.finish()
        switch mode {
        case .off:
            return .plaintext
        case .mtls:
            return .mutualTLS(MutualTLSFiles(caCertificateFile: ca!, certificateFile: cert!, privateKeyFile: key!))
        }
    }
}
