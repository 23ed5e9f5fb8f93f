import Foundation
import Testing

/// `agentflow-dns`, run as a user would: the distribution offers `dns` in
/// every subcommand, and three masters find each other through a name.
@Suite("agentflow-dns", .serialized)
struct AgentFlowDNSCommandTests {
    static var executable: URL {
        var folder = URL(filePath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while !FileManager.default.isExecutableFile(atPath: folder.appending(path: "agentflow-dns").path()) && folder.path() != "/" {
            folder = folder.deletingLastPathComponent()
        }
        return folder.appending(path: "agentflow-dns")
    }

    static func run(_ arguments: [String], in directory: URL? = nil) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AGENTFLOW_") }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }

    /// A GET with curl (Foundation on Linux fetches http URLs only through FoundationNetworking).
    static func get(_ url: String) throws -> Data {
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/curl")
        process.arguments = ["-sf", "--max-time", "2", url]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileReadUnknown) }
        return data
    }

    @Test("modules lists dns beside the standard modules")
    func modules() throws {
        let result = try Self.run(["modules"])
        #expect(result.status == 0, "\(result.err)")
        #expect(result.out.contains("  dns "), "\(result.out)")
        #expect(result.out.contains("  signal ") && result.out.contains("  grpc "), "\(result.out)")
    }

    @Test("config check accepts a dns discovery block and refuses a bad one with its key")
    func configCheck() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "agentflow-dns-config-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let good = "role: master\ndiscovery:\n  kind: dns\n  name: masters.agentflow.internal\n  port: 50051\n  interval: 5s\n"
        try good.write(to: folder.appending(path: "good.yml"), atomically: true, encoding: .utf8)
        let ok = try Self.run(["config", "check", folder.appending(path: "good.yml").path()])
        #expect(ok.status == 0, "\(ok.err)")
        #expect(ok.out.contains("name: masters.agentflow.internal") && ok.out.contains("# ok"), "\(ok.out)")

        try "role: master\ndiscovery:\n  kind: dns\n  port: 70000\n  name: x\n".write(to: folder.appending(path: "bad.yml"), atomically: true, encoding: .utf8)
        let bad = try Self.run(["config", "check", folder.appending(path: "bad.yml").path()])
        #expect(bad.status == 1)
        #expect(bad.err.contains("discovery.port") && bad.err.contains("70000"), "\(bad.err)")

        try "role: master\ndiscovery:\n  kind: dns\n  port: 50051\n".write(to: folder.appending(path: "noname.yml"), atomically: true, encoding: .utf8)
        let missing = try Self.run(["config", "check", folder.appending(path: "noname.yml").path()])
        #expect(missing.status == 1 && missing.err.contains("discovery.name"), "\(missing.err)")
    }

    @Test("three masters find each other through one name and form a full mesh")
    func threeMasterMesh() async throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "agentflow-dns-mesh-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var masters: [Process] = []
        defer {
            for process in masters where process.isRunning { process.terminate(); process.waitUntilExit() }
            if ProcessInfo.processInfo.environment["AGENTFLOW_KEEP_TEST_FILES"] == nil { try? FileManager.default.removeItem(at: folder) }
        }
        // One port for every master, each on its own loopback address: what a
        // compose service looks like (every replica on :port, one IP each).
        let port = Int.random(in: 20_000...29_000)
        let ids = ["m1", "m2", "m3"]
        let hosts = ids.indices.map { "127.0.0.\(31 + $0)" }
        try (hosts.map { "\($0) masters.agentflow.internal" }.joined(separator: "\n") + "\n")
            .write(to: folder.appending(path: "hosts"), atomically: true, encoding: .utf8)
        #expect(try Self.run(["certs", "ca", "--dir", folder.appending(path: "ca").path()]).status == 0)
        for (index, id) in ids.enumerated() {
            let node = folder.appending(path: id)
            #expect(try Self.run(["certs", "node", id, "--ca-dir", folder.appending(path: "ca").path(), "--out", node.appending(path: "certs").path()]).status == 0)
            try """
                role: master
                node:
                  id: \(id)
                  data_dir: .
                transport:
                  kind: tcp
                  listen: \(hosts[index]):\(port)
                discovery:
                  kind: dns
                  name: masters.agentflow.internal
                  port: \(port)
                  interval: 300ms
                  hosts_file: ../hosts
                mesh:
                  ping_interval: 300ms
                  peer_timeout: 3s
                  reconnect_max_delay: 1s
                api:
                  listen: 127.0.0.1:\(port + 1 + index)
                """.write(to: node.appending(path: "master.yml"), atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = Self.executable
            process.arguments = ["master", "--config", "master.yml"]
            process.currentDirectoryURL = node
            let log = node.appending(path: "master.log")
            _ = FileManager.default.createFile(atPath: log.path(), contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            masters.append(process)
        }
        let deadline = ContinuousClock.now + .seconds(30)
        var linked: [String: [String]] = [:]
        while ContinuousClock.now < deadline {
            linked = [:]
            for index in ids.indices {
                guard let data = try? Self.get("http://127.0.0.1:\(port + 1 + index)/api/cluster/status"),
                      let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                      let peers = json["peers"] as? [[String: Any]] else { continue }
                linked[ids[index]] = peers.filter { $0["state"] as? String == "connected" }.compactMap { $0["node_id"] as? String }.sorted()
            }
            if ids.allSatisfy({ id in linked[id] == ids.filter { $0 != id } }) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        for id in ids {
            #expect(linked[id] == ids.filter { $0 != id }, "\(id) linked to \(linked[id] ?? []); log:\n\((try? String(contentsOf: folder.appending(path: "\(id)/master.log"), encoding: .utf8))?.suffix(2_000) ?? "")")
        }
    }
}
