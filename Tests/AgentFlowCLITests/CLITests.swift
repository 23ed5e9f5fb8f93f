import Foundation
import Testing

/// Runs the real `agentflow` binary, as a user would.
@Suite("agentflow command line")
struct CLITests {
    static let packageRoot = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The built executable sits next to the test bundle.
    static var executable: URL {
        let testBinary = URL(filePath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var folder = testBinary.deletingLastPathComponent()
        // On Linux the runner is .build/<triple>/debug/AgentFlowPackageTests.xctest.
        while !FileManager.default.isExecutableFile(atPath: folder.appending(path: "agentflow").path()) && folder.path() != "/" {
            folder = folder.deletingLastPathComponent()
        }
        return folder.appending(path: "agentflow")
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = packageRoot
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AGENTFLOW_") }.merging(environment) { $1 }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    @Test("--version prints the version")
    func version() throws {
        let result = try Self.run(["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test("config check accepts the examples and prints the effective config", arguments: ["examples/master.yml", "examples/signal.yml"])
    func checkExamples(file: String) throws {
        let result = try Self.run(["config", "check", file])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("# ok"))
        #expect(result.stdout.contains("log:\n  level: info"))
    }

    @Test("config check refuses a broken copy naming the key", arguments: ["examples/master.yml", "examples/signal.yml"])
    func checkBroken(file: String) throws {
        let text = try String(contentsOf: Self.packageRoot.appending(path: file), encoding: .utf8)
        let broken = FileManager.default.temporaryDirectory.appending(path: "broken-\(UUID().uuidString).yml")
        try text.replacingOccurrences(of: "  level: info", with: "  level: 7").write(to: broken, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: broken) }
        let result = try Self.run(["config", "check", broken.path()])
        #expect(result.status == 1)
        #expect(result.stderr.contains("log.level: \"7\" is not allowed; expected one of trace, debug"))
        #expect(result.stdout.isEmpty)
    }

    @Test("config check of defaults, with an environment override")
    func checkDefaults() throws {
        let result = try Self.run(["config", "check", "--role", "master"], environment: ["AGENTFLOW_MASTER__MESH__MAX_PEERS": "2"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("max_peers: 2  # env AGENTFLOW_MASTER__MESH__MAX_PEERS"))
        let bad = try Self.run(["config", "check", "--role", "master"], environment: ["AGENTFLOW_MASTER__MESH__MAX_PEERS": "x"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("AGENTFLOW_MASTER__MESH__MAX_PEERS"))
    }

    @Test("certs creates a CA and node certificates with safe permissions, and refuses to overwrite")
    func certs() throws {
        let directory = NSTemporaryDirectory() + "agentflow-certs-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try Self.run(["certs", "ca", "--dir", "\(directory)/ca"])
        #expect(ca.status == 0, "\(ca.stderr)")
        let node = try Self.run(["certs", "node", "master-a", "--ca-dir", "\(directory)/ca", "--out", "\(directory)/a"])
        #expect(node.status == 0, "\(node.stderr)")
        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
        }
        #expect(try mode("\(directory)/ca/ca.key") == 0o600)
        #expect(try mode("\(directory)/a/node.key") == 0o600)
        #expect(try mode("\(directory)/a") == 0o700)
        #expect(try mode("\(directory)/a/node.pem") == 0o644)
        // A real tool agrees: the node certificate chains to the CA and names the node.
        let verify = Process()
        verify.executableURL = URL(filePath: "/usr/bin/openssl")
        verify.arguments = ["verify", "-CAfile", "\(directory)/a/ca.pem", "-purpose", "sslclient", "\(directory)/a/node.pem"]
        let output = Pipe()
        verify.standardOutput = output
        try verify.run()
        verify.waitUntilExit()
        #expect(verify.terminationStatus == 0)
        let pem = try String(contentsOfFile: "\(directory)/a/node.pem", encoding: .utf8)
        #expect(pem.hasPrefix("-----BEGIN CERTIFICATE-----"))
        // No silent overwrite; bad ids are refused with the rules.
        let again = try Self.run(["certs", "node", "master-a", "--ca-dir", "\(directory)/ca", "--out", "\(directory)/a"])
        #expect(again.status != 0 && again.stderr.contains("--force"), "\(again.stderr)")
        let bad = try Self.run(["certs", "node", "Not An Id", "--ca-dir", "\(directory)/ca", "--out", "\(directory)/b"])
        #expect(bad.status != 0 && bad.stderr.contains("not a valid node id"), "\(bad.stderr)")
        let noCA = try Self.run(["certs", "node", "master-b", "--ca-dir", "\(directory)/missing", "--out", "\(directory)/b"])
        #expect(noCA.status != 0 && noCA.stderr.contains("agentflow certs ca"), "\(noCA.stderr)")
    }

    @Test("usage errors are explained")
    func usage() throws {
        let result = try Self.run(["config", "check"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--role"))
        let modules = try Self.run(["modules"])
        #expect(modules.stdout.contains("memory"))
        // The demo runs real processes: only transports that cross them, named from the registry.
        let demo = try Self.run(["demo", "--transport", "memory"])
        #expect(demo.status != 0 && demo.stderr.contains("--transport must be one of: grpc, tcp"), "\(demo.stderr)")
    }

    @Test("usage lines carry the name the binary was started as")
    func commandName() throws {
        let result = try Self.run(["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: agentflow <subcommand>"), "\(result.stdout)")
        #expect(result.stdout.contains("modules") && result.stdout.contains("master") && result.stdout.contains("demo"))
    }
}

@Suite("agentflow processes: signal, master, demo", .serialized)
struct ProcessTests {
    @Test("runs on a config, answers, and exits cleanly on SIGTERM")
    func sigterm() async throws {
        let port = Int.random(in: 41_000...49_000)
        let config = FileManager.default.temporaryDirectory.appending(path: "signal-\(port).yml")
        try "role: signal\nhttp:\n  listen: 127.0.0.1:\(port)\nstun:\n  listen: 127.0.0.1:\(port)\n".write(to: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = CLITests.executable
        process.arguments = ["signal", "--config", config.path()]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var up = false
        for _ in 0..<100 where !up {
            try await Task.sleep(for: .milliseconds(50))
            let probe = Process()
            probe.executableURL = URL(filePath: "/usr/bin/curl")
            probe.arguments = ["-fsS", "-o", "/dev/null", "http://127.0.0.1:\(port)/healthz"]
            probe.standardError = FileHandle.nullDevice
            try probe.run()
            probe.waitUntilExit()
            up = probe.terminationStatus == 0
        }
        #expect(up, "the signal server did not answer /healthz")
        process.terminate()  // SIGTERM
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning, "still running 5 s after SIGTERM")
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(log.contains("signal server stopped"))
        #expect(log.contains("node=signal"))
    }

    @Test("master without certificates says how to make them")
    func masterWithoutCertificates() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "no-certs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let result = try CLITests.run(["master"], environment: ["AGENTFLOW_MASTER__NODE__DATA_DIR": folder.path(), "AGENTFLOW_MASTER__NODE__ID": "edge-1"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("tls.mode is mtls but"))
        #expect(result.stderr.contains("agentflow certs node edge-1 --ca-dir ./agentflow-ca --out \(folder.path())"), "\(result.stderr)")
    }

    @Test("demo: a signal server and three masters form a full mesh, and Ctrl-C stops them all")
    func demo() async throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "demo-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let output = folder.appending(path: "demo.out")
        _ = FileManager.default.createFile(atPath: output.path(), contents: nil)
        // Below the ephemeral range (32768+), so no outgoing connection holds a port the demo needs.
        let base = Int.random(in: 20_000...32_000) / 100 * 100
        let process = Process()
        process.executableURL = CLITests.executable
        process.arguments = ["demo", "--dir", folder.appending(path: "state").path(), "--base-port", String(base), "--transport", "tcp"]
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        func text() -> String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline && text().components(separatedBy: "2/2 links").count < 4 {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(text().components(separatedBy: "2/2 links").count == 4, "each master reports 2/2 links: \(text())")
        #expect(text().contains("http://127.0.0.1:\(base + 20)/api/cluster/status"))
        #expect(text().contains("Dashboard of master-1: http://127.0.0.1:\(base + 20)/"))
        kill(process.processIdentifier, SIGINT)
        let stopBy = ContinuousClock.now + .seconds(15)
        while process.isRunning && ContinuousClock.now < stopBy { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 0)
        #expect(text().contains("stopped."))
        #expect(!text().contains("did not stop in time"))
        // The masters stopped gracefully: each says so in its log.
        for id in ["master-1", "master-2", "master-3"] {
            let log = (try? String(contentsOf: folder.appending(path: "state/logs/\(id).log"), encoding: .utf8)) ?? ""
            #expect(log.contains("master \(id) stopped"), "\(id) log")
        }
    }

    @Test("probe: an unknown name is a usage error; a silent STUN server fails with exit 1 and a JSON report; modules lists the probes")
    func probe() throws {
        let unknown = try CLITests.run(["probe", "nosuch"])
        #expect(unknown.status == 64, "\(unknown.stderr)")
        #expect(unknown.stderr.contains("no probe named 'nosuch'"), "\(unknown.stderr)")
        #expect(unknown.stderr.contains("reach, signal, stun"))

        // A UDP port nobody answers on.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let silent = try CLITests.run(["probe", "stun", "--server", "127.0.0.1:\(port)", "--json", "--timeout", "3s"])
        #expect(silent.status == 1)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(silent.stdout.utf8)) as? [String: Any], "\(silent.stdout)")
        let report = try #require((json["probes"] as? [[String: Any]])?.first)
        #expect(report["probe"] as? String == "stun")
        #expect(report["outcome"] as? String == "failed")
        #expect((report["summary"] as? String)?.contains("no STUN server answered") == true, "\(report)")

        let modules = try CLITests.run(["modules"])
        for name in ["stun", "reach", "signal"] { #expect(modules.stdout.contains(name)) }
    }
}
