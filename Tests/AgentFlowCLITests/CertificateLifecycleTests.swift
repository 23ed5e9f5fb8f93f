import AgentFlowCore
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

    /// `sh -c` with output captured (for openssl pipelines).
    static func shell(_ command: String) -> String {
        let process = Process()
        process.executableURL = URL(filePath: "/bin/sh")
        process.arguments = ["-c", command]
        let file = FileManager.default.temporaryDirectory.appending(path: "sh-\(UUID().uuidString.prefix(8))")
        FileManager.default.createFile(atPath: file.path(), contents: nil)
        defer { try? FileManager.default.removeItem(at: file) }
        guard let handle = try? FileHandle(forWritingTo: file) else { return "" }
        process.standardOutput = handle
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "" }
        process.waitUntilExit()
        try? handle.close()
        return (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    }

    @Test("rotation: renewing m2's certificate while m1 is linked to it drops no link, and a new handshake gets the new certificate")
    func rotation() async throws {
        let base = Int.random(in: 41_000...48_000)
        let folder = FileManager.default.temporaryDirectory.appending(path: "rotate-\(base)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let ca = folder.appending(path: "ca").path()
        #expect(try CLITests.run(["certs", "ca", "--dir", ca]).status == 0)
        for id in ["m1", "m2", "m3"] {
            #expect(try CLITests.run(["certs", "node", id, "--ca-dir", ca, "--out", folder.appending(path: "\(id)/certs").path(), "--days", "5"]).status == 0)
        }
        let processes = try Self.startPair(base: base, folder: folder)
        defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let linked = try await Self.waitLinked(base: base)
        let since = try #require(linked?["connected_since"] as? String, "m1 never linked to m2: \(String(describing: linked))")

        func servedEndDate() -> String {
            Self.shell("openssl s_client -connect 127.0.0.1:\(base + 10) -cert \(folder.path())/m3/certs/node.pem -key \(folder.path())/m3/certs/node.key -CAfile \(ca)/ca.pem -alpn agentflow-tcp/1 </dev/null 2>/dev/null | openssl x509 -noout -enddate")
        }
        let before = servedEndDate()
        #expect(before.hasPrefix("notAfter="), "no certificate from m2: \(before)")

        let renewed = try CLITests.run(["certs", "renew", "m2", "--ca-dir", ca, "--out", folder.appending(path: "m2/certs").path(), "--days", "40"])
        #expect(renewed.status == 0, "\(renewed.stderr)")
        let expected = Self.shell("openssl x509 -noout -enddate -in \(folder.path())/m2/certs/node.pem")
        var log = ""
        for _ in 0..<100 where !log.contains("reloaded the TLS material") {
            try await Task.sleep(for: .milliseconds(100))
            log = (try? String(contentsOf: folder.appending(path: "m2.log"), encoding: .utf8)) ?? ""
        }
        #expect(log.contains("reloaded the TLS material (changed on disk"), "\(log)")
        let after = servedEndDate()
        #expect(after == expected && after != before, "a new handshake still gets the old certificate: before \(before), after \(after), on disk \(expected)")
        try await Task.sleep(for: .seconds(1))
        let still = Self.m2AsSeenByM1(base: base)
        #expect(still?["state"] as? String == "connected" && still?["connected_since"] as? String == since, "the link dropped: \(String(describing: still))")

        // SIGHUP reloads too.
        kill(processes[1].processIdentifier, SIGHUP)
        for _ in 0..<50 where !log.contains("reloaded the TLS material (SIGHUP)") {
            try await Task.sleep(for: .milliseconds(100))
            log = (try? String(contentsOf: folder.appending(path: "m2.log"), encoding: .utf8)) ?? ""
        }
        #expect(log.contains("reloaded the TLS material (SIGHUP)"), "\(log)")
        #expect(processes[1].isRunning, "SIGHUP stopped the master")
    }

    @Test("a link whose peer's certificate expires while it is up is closed at that moment, with the reason")
    func expiryClosesLink() async throws {
        let base = Int.random(in: 41_000...48_000)
        let folder = FileManager.default.temporaryDirectory.appending(path: "expire-\(base)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let ca = try CertificateAuthority.makeCA()
        for (id, seconds) in [("m1", 86_400), ("m2", 8)] {
            let issued = try CertificateAuthority.issueNodeCertificate(
                nodeID: .init(id)!, caCertificatePEM: ca.certificatePEM, caPrivateKeyPEM: ca.privateKeyPEM,
                validity: .init(notBeforeOffset: -60, notAfterOffset: seconds))
            let certs = folder.appending(path: "\(id)/certs")
            try FileManager.default.createDirectory(at: certs, withIntermediateDirectories: true)
            try ca.certificatePEM.write(to: certs.appending(path: "ca.pem"), atomically: true, encoding: .utf8)
            try issued.certificatePEM.write(to: certs.appending(path: "node.pem"), atomically: true, encoding: .utf8)
            try issued.privateKeyPEM.write(to: certs.appending(path: "node.key"), atomically: true, encoding: .utf8)
        }
        let started = Date()
        let processes = try Self.startPair(base: base, folder: folder)
        defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let state = try await Self.waitLinked(base: base, tries: 50)?["state"] as? String
        #expect(state == "connected", "m1 and m2 never linked")
        // m2's certificate expires 8 s after it was made: the link ends then, and stays down.
        var log = ""
        for _ in 0..<120 where !log.contains("the certificate of m2 expired") {
            try await Task.sleep(for: .milliseconds(100))
            log = (try? String(contentsOf: folder.appending(path: "m1.log"), encoding: .utf8)) ?? ""
        }
        #expect(log.contains("the certificate of m2 expired"), "\(log)")
        #expect(Date().timeIntervalSince(started) >= 7, "closed before the certificate expired")
        try await Task.sleep(for: .seconds(2))
        #expect(Self.m2AsSeenByM1(base: base)?["state"] as? String != "connected", "a link with an expired certificate came back")
    }

    @Test("rolling the cluster to a new CA in steps (add it, reissue, drop the old one) drops no link; afterwards only the new CA's certificates get in")
    func caRoll() async throws {
        let base = Int.random(in: 41_000...48_000)
        let folder = FileManager.default.temporaryDirectory.appending(path: "caroll-\(base)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let old = try CertificateAuthority.makeCA(commonName: "old CA")
        let new = try CertificateAuthority.makeCA(commonName: "new CA")
        func write(_ id: String, _ ca: CertificateAuthority.Issued, bundle: [CertificateAuthority.Issued]) throws {
            let issued = try CertificateAuthority.issueNodeCertificate(
                nodeID: .init(id)!, caCertificatePEM: ca.certificatePEM, caPrivateKeyPEM: ca.privateKeyPEM, validity: .days(2))
            let certs = folder.appending(path: "\(id)/certs")
            try FileManager.default.createDirectory(at: certs, withIntermediateDirectories: true)
            try bundle.map(\.certificatePEM).joined().write(to: certs.appending(path: "ca.pem"), atomically: true, encoding: .utf8)
            // Key first, then certificate, each replaced whole (rename), as a careful operator does.
            try issued.privateKeyPEM.write(to: certs.appending(path: "node.key"), atomically: true, encoding: .utf8)
            try issued.certificatePEM.write(to: certs.appending(path: "node.pem"), atomically: true, encoding: .utf8)
        }
        func setBundle(_ id: String, _ bundle: [CertificateAuthority.Issued]) throws {
            try bundle.map(\.certificatePEM).joined().write(to: folder.appending(path: "\(id)/certs/ca.pem"), atomically: true, encoding: .utf8)
        }
        for id in ["m1", "m2", "probe-old", "probe-new"] { try write(id, id == "probe-new" ? new : old, bundle: [old]) }
        let processes = try Self.startPair(base: base, folder: folder)
        defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let linked = try await Self.waitLinked(base: base)
        let since = try #require(linked?["connected_since"] as? String, "m1 and m2 never linked")
        func reloads(_ id: String) -> Int {
            ((try? String(contentsOf: folder.appending(path: "\(id).log"), encoding: .utf8)) ?? "").components(separatedBy: "reloaded the TLS material").count - 1
        }
        func waitReloads(_ count: Int) async throws {
            for _ in 0..<100 where reloads("m1") < count || reloads("m2") < count { try await Task.sleep(for: .milliseconds(100)) }
            #expect(reloads("m1") >= count && reloads("m2") >= count, "reloads: m1 \(reloads("m1")), m2 \(reloads("m2"))")
        }
        // 1. Trust both CAs everywhere. 2. Reissue every node from the new CA. 3. Trust only the new CA.
        for id in ["m1", "m2"] { try setBundle(id, [old, new]) }
        try await waitReloads(1)
        for id in ["m1", "m2"] { try write(id, new, bundle: [old, new]) }
        try await waitReloads(2)
        for id in ["m1", "m2"] { try setBundle(id, [new]) }
        try await waitReloads(3)
        try await Task.sleep(for: .seconds(2.5))  // a last reload, if the poll split a step
        let after = Self.m2AsSeenByM1(base: base)
        #expect(after?["state"] as? String == "connected" && after?["connected_since"] as? String == since, "the link dropped during the roll: \(String(describing: after))")

        // A fresh handshake: a certificate of the new CA gets in, one of the old CA no longer does.
        func handshake(_ id: String) -> String {
            // Input that lasts a second keeps s_client reading long enough to hear the server's alert.
            Self.shell("(echo hello; sleep 1) | openssl s_client -connect 127.0.0.1:\(base + 10) -cert \(folder.path())/\(id)/certs/node.pem -key \(folder.path())/\(id)/certs/node.key -CAfile \(folder.path())/m2/certs/ca.pem -alpn agentflow-tcp/1 2>&1; echo")
        }
        let fresh = handshake("probe-new")
        #expect(fresh.contains("Verify return code: 0"), "\(fresh.suffix(400))")
        #expect(fresh.contains("CN = new CA"), "m2 does not present the new CA's certificate: \(fresh.suffix(400))")
        let stale = handshake("probe-old")
        #expect(stale.lowercased().contains("unknown ca"), "a certificate of the dropped CA got in: \(stale.suffix(400))")
    }

    /// m2 in m1's `/api/cluster/status` (m1's API on `base + 1`); nil when m1 does not answer.
    static func m2AsSeenByM1(base: Int) -> [String: Any]? {
        guard let text = get("http://127.0.0.1:\(base + 1)/api/cluster/status"),
              let status = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        return (status["peers"] as? [[String: Any]])?.first { $0["node_id"] as? String == "m2" }
    }

    /// Polls `m2AsSeenByM1` every 100 ms until m2 is connected or `tries` run out, then
    /// once more a second later: both masters dial at start, and the tie-break may
    /// replace the first link with the other one's (a new `connected_since`).
    static func waitLinked(base: Int, tries: Int = 150) async throws -> [String: Any]? {
        var linked: [String: Any]?
        for _ in 0..<tries where linked?["state"] as? String != "connected" {
            try await Task.sleep(for: .milliseconds(100))
            linked = m2AsSeenByM1(base: base)
        }
        guard linked?["state"] as? String == "connected" else { return linked }
        try await Task.sleep(for: .seconds(1))
        return m2AsSeenByM1(base: base)
    }

    /// m1 (tcp on `base`, API on `base + 1`) and m2 (`base + 10`, `base + 11`), each
    /// listing the other in a static peers file, certificates under `folder/<id>/certs`,
    /// logs in `folder/<id>.log`.
    static func startPair(base: Int, folder: URL) throws -> [Process] {
        try """
            peers:
              - {id: m1, endpoints: ["tcp://127.0.0.1:\(base)"]}
              - {id: m2, endpoints: ["tcp://127.0.0.1:\(base + 10)"]}
            """.write(to: folder.appending(path: "peers.yml"), atomically: true, encoding: .utf8)
        var processes: [Process] = []
        for (index, id) in ["m1", "m2"].enumerated() {
            let port = base + index * 10
            try """
                role: master
                node: {id: \(id), data_dir: \(folder.path())/\(id)}
                transport: {kind: tcp, listen: 127.0.0.1:\(port)}
                discovery: {kind: static, file: \(folder.path())/peers.yml}
                probes: {run: []}
                api: {listen: 127.0.0.1:\(port + 1)}
                """.write(to: folder.appending(path: "\(id).yml"), atomically: true, encoding: .utf8)
            let log = folder.appending(path: "\(id).log")
            FileManager.default.createFile(atPath: log.path(), contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            let process = Process()
            process.executableURL = CLITests.executable
            process.arguments = ["master", "--config", folder.appending(path: "\(id).yml").path()]
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            processes.append(process)
        }
        return processes
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
