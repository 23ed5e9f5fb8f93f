import AgentFlowCore
import AgentFlowTLS
import ArgumentParser
import Foundation

/// `agentflow certs`: the cluster's certificates, made in process with OpenSSL.
struct CertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Create a cluster CA and issue node certificates for mutual TLS.",
        discussion: """
            Every master needs a certificate of the cluster CA whose common name is its node id.
              agentflow certs ca --dir ./agentflow-ca
              agentflow certs node master-a --ca-dir ./agentflow-ca --out ./agentflow-data/certs
              agentflow certs renew master-a --ca-dir ./agentflow-ca --out ./agentflow-data/certs
            Keys are written 0600 in 0700 directories. Keep ca.key offline; nodes need only ca.pem.
            """,
        subcommands: [CA.self, Node.self, Renew.self]
    )

    struct CA: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a new cluster CA (ca.pem, ca.key).")

        @Option(help: "Directory to write ca.pem and ca.key into.")
        var dir = "./agentflow-ca"
        @Option(help: "Validity in days.")
        var days = 3_650
        @Option(help: "The CA certificate's common name.")
        var name = "AgentFlow cluster CA"
        @Flag(help: "Replace an existing CA (every node certificate it issued stops being trusted by new nodes).")
        var force = false

        func run() throws {
            let files = CertificateFiles(directory: dir)
            try files.refuseOverwrite(["ca.pem", "ca.key"], force: force)
            let ca = try CertificateAuthority.makeCA(commonName: name, validity: .days(days))
            try files.write("ca.pem", ca.certificatePEM, mode: 0o644)
            try files.write("ca.key", ca.privateKeyPEM, mode: 0o600)
            print("wrote \(files.path("ca.pem")) and \(files.path("ca.key")) (valid \(days) days)")
        }
    }

    struct Node: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a node certificate (node.pem, node.key, and a copy of ca.pem).")

        @Argument(help: "The node id (node.id in the master's config).")
        var nodeID: String
        @Option(help: "Directory holding ca.pem and ca.key.")
        var caDir = "./agentflow-ca"
        @Option(help: "Directory to write node.pem, node.key and ca.pem into (the master's <data_dir>/certs).")
        var out = "./agentflow-data/certs"
        @Option(help: "Validity in days.")
        var days = 825
        @Flag(help: "Replace existing files.")
        var force = false

        func run() throws {
            guard let id = NodeID(nodeID) else {
                throw ValidationError("'\(nodeID)' is not a valid node id: \(NodeID.rules)")
            }
            let files = CertificateFiles(directory: out)
            try files.refuseOverwrite(["node.pem", "node.key"], force: force)
            _ = try files.issueNode(id, caDir: caDir, days: days)
            print("wrote \(files.path("node.pem")), \(files.path("node.key")) and \(files.path("ca.pem")) for node '\(id)' (valid \(days) days)")
        }
    }
}

extension CertsCommand {
    struct Renew: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reissue a node's certificate with the same id (a new key and validity), replacing node.pem and node.key.",
            discussion: "The master warns 30, 7 and 1 days before its certificate expires, and reloads renewed files by itself (or on SIGHUP) without dropping links.")

        @Argument(help: "The node id: the common name of the certificate being renewed.")
        var nodeID: String
        @Option(help: "Directory holding ca.pem and ca.key.")
        var caDir = "./agentflow-ca"
        @Option(help: "Directory holding the node's node.pem and node.key (the master's <data_dir>/certs).")
        var out = "./agentflow-data/certs"
        @Option(help: "Validity in days.")
        var days = 825

        func run() throws {
            guard let id = NodeID(nodeID) else {
                throw ValidationError("'\(nodeID)' is not a valid node id: \(NodeID.rules)")
            }
            let files = CertificateFiles(directory: out)
            let current = try files.read("node.pem", hint: "there is no certificate to renew; issue one with: agentflow certs node \(id) --ca-dir \(caDir) --out \(out)")
            let holder = try CertificateAuthority.commonName(ofPEM: current)
            guard holder == id.rawValue else {
                throw ValidationError("\(files.path("node.pem")) is the certificate of '\(holder ?? "nobody")', not '\(id)': renew keeps the id, so give the id it holds")
            }
            let issued = try files.issueNode(id, caDir: caDir, days: days)
            let until = Timestamp.string(unixMicros: try CertificateAuthority.expiry(ofPEM: issued.certificatePEM) * 1_000_000)
            print("renewed \(files.path("node.pem")) for node '\(id)': valid until \(until). A running master picks it up within seconds (or send it SIGHUP); its links stay up.")
        }
    }
}

/// Reads and writes certificate files with safe permissions.
struct CertificateFiles {
    let directory: String

    func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    func refuseOverwrite(_ names: [String], force: Bool) throws {
        guard !force else { return }
        for name in names where FileManager.default.fileExists(atPath: path(name)) {
            throw ValidationError("\(path(name)) already exists; pass --force to replace it")
        }
    }

    func read(_ name: String, hint: String) throws -> String {
        guard let text = try? String(contentsOfFile: path(name), encoding: .utf8) else {
            throw ValidationError("cannot read \(path(name)): \(hint)")
        }
        return text
    }

    /// Issues `id` a certificate of the CA in `caDir` and writes node.key, node.pem and ca.pem here.
    func issueNode(_ id: NodeID, caDir: String, days: Int) throws -> CertificateAuthority.Issued {
        let ca = CertificateFiles(directory: caDir)
        let caCertificate = try ca.read("ca.pem", hint: "create a CA first: agentflow certs ca --dir \(caDir)")
        let caKey = try ca.read("ca.key", hint: "the CA's private key is needed to issue certificates")
        let issued = try CertificateAuthority.issueNodeCertificate(
            nodeID: id, caCertificatePEM: caCertificate, caPrivateKeyPEM: caKey, validity: .days(days))
        try write("node.key", issued.privateKeyPEM, mode: 0o600)
        try write("node.pem", issued.certificatePEM, mode: 0o644)
        try write("ca.pem", caCertificate, mode: 0o644)
        return issued
    }

    func write(_ name: String, _ contents: String, mode: Int) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let target = path(name)
        // Create with the final mode before any byte is written, so a key is never briefly world-readable.
        _ = FileManager.default.createFile(atPath: target, contents: nil, attributes: [.posixPermissions: mode])
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: target)
        guard let handle = FileHandle(forWritingAtPath: target) else { throw ValidationError("cannot write \(target)") }
        defer { try? handle.close() }
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data(contents.utf8))
    }
}
