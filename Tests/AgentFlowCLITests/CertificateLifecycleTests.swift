import AgentFlowTLS
import Foundation
import Testing

/// A node certificate's life: expiry warnings, the time left in the status and metrics, renewal.
@Suite("certificate expiry and renewal")
struct CertificateLifecycleTests {
    @Test("a master whose certificate has 5 days left warns with the fix, and shows the time left in its status and /metrics; renew keeps the id")
    func expiryAndRenew() async throws {
        let base = Int.random(in: 41_000...48_000)
        let folder = FileManager.default.temporaryDirectory.appending(path: "certlife-\(base)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let ca = folder.appending(path: "ca").path()
        let certs = folder.appending(path: "m1/certs").path()
        #expect(try CLITests.run(["certs", "ca", "--dir", ca]).status == 0)
        #expect(try CLITests.run(["certs", "node", "m1", "--ca-dir", ca, "--out", certs, "--days", "5"]).status == 0)

        try """
            role: master
            node: {id: m1, data_dir: \(folder.path())/m1}
            transport: {kind: tcp, listen: 127.0.0.1:\(base)}
            discovery: {kind: static, file: \(folder.path())/peers.yml}
            probes: {run: []}
            api: {listen: 127.0.0.1:\(base + 1)}
            """.write(to: folder.appending(path: "m1.yml"), atomically: true, encoding: .utf8)
        try "peers: []\n".write(to: folder.appending(path: "peers.yml"), atomically: true, encoding: .utf8)
        let log = folder.appending(path: "m1.log")
        FileManager.default.createFile(atPath: log.path(), contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let master = Process()
        master.executableURL = CLITests.executable
        master.arguments = ["master", "--config", folder.appending(path: "m1.yml").path()]
        master.standardOutput = handle
        master.standardError = handle
        try master.run()
        defer { if master.isRunning { kill(master.processIdentifier, SIGKILL) } }

        var status: [String: Any]?
        for _ in 0..<100 where status?["local"] == nil {
            try await Task.sleep(for: .milliseconds(100))
            if let text = Self.get("http://127.0.0.1:\(base + 1)/api/cluster/status") {
                status = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            }
        }
        let certificate = try #require((status?["local"] as? [String: Any])?["certificate"] as? [String: Any], "\(String(describing: status))")
        let left = try #require(certificate["seconds_left"] as? Int)
        #expect((4 * 86_400 ... 5 * 86_400).contains(left), "\(certificate)")
        let metrics = Self.get("http://127.0.0.1:\(base + 1)/metrics") ?? ""
        #expect(metrics.contains("agentflow_certificate_expiry_seconds "), "\(metrics.prefix(500))")
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(text.contains("expires in 5.0 days") || text.contains("expires in 4.9 days"), "\(text)")
        #expect(text.contains("agentflow certs renew m1"), "\(text)")

        // Renew: the id must match; the new certificate keeps it and lasts longer.
        let wrong = try CLITests.run(["certs", "renew", "m2", "--ca-dir", ca, "--out", certs])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("is the certificate of 'm1'"), "\(wrong.stderr)")
        let renewed = try CLITests.run(["certs", "renew", "m1", "--ca-dir", ca, "--out", certs, "--days", "40"])
        #expect(renewed.status == 0, "\(renewed.stderr)")
        let pem = try String(contentsOfFile: certs + "/node.pem", encoding: .utf8)
        #expect(try CertificateAuthority.commonName(ofPEM: pem) == "m1")
        let expiry = try CertificateAuthority.expiry(ofPEM: pem) - Int64(Date().timeIntervalSince1970)
        #expect((39 * 86_400 ... 40 * 86_400 + 60).contains(expiry))
    }

    /// The body of a GET, through curl; nil when it fails.
    static func get(_ url: String) -> String? {
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/curl")
        process.arguments = ["-sf", "--max-time", "2", url]
        let file = FileManager.default.temporaryDirectory.appending(path: "get-\(UUID().uuidString.prefix(8))")
        FileManager.default.createFile(atPath: file.path(), contents: nil)
        defer { try? FileManager.default.removeItem(at: file) }
        guard let handle = try? FileHandle(forWritingTo: file) else { return nil }
        process.standardOutput = handle
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        process.waitUntilExit()
        try? handle.close()
        return process.terminationStatus == 0 ? try? String(contentsOf: file, encoding: .utf8) : nil
    }
}
