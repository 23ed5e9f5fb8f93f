import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowMesh
import AgentFlowTLS
import ArgumentParser
import Foundation
import UnixSignals

/// `agentflow demo`: a local demo mesh of real processes — a signal server and
/// N masters on loopback — with certificates made on first run. It prints
/// where to look and a line whenever the mesh changes, until Ctrl-C.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a local demo mesh: a signal server and masters on 127.0.0.1, as separate processes.",
        discussion: """
            Everything lives in --dir (certificates, configs, peer books, logs); a second run reuses it. \
            Kill a master (its pid is printed) to watch the others notice and reconnect when you start it \
            again with the printed command. Ctrl-C stops every process gracefully.
            """
    )

    @Option(help: "Folder for the demo's certificates, configs, data and logs.")
    var dir = "./agentflow-demo"

    @Option(help: "How many masters (1-9).")
    var masters = 3

    @Option(help: "Transport for the links: any this build registers that crosses processes (grpc, tcp, …).")
    var transport = "grpc"

    @Option(help: "First port: signal REST on it, STUN on +1, masters' links on +10…, their APIs on +20….")
    var basePort = 17070

    func validate() throws {
        guard (1...9).contains(masters) else { throw ValidationError("--masters must be 1-9") }
        let usable = AgentFlowCLI.modules.transports.keys.filter { $0 != "memory" }.sorted()
        guard usable.contains(transport) else {
            throw ValidationError("--transport must be one of: \(usable.joined(separator: ", ")) (memory links stay inside one process)")
        }
        guard (1_024...65_000).contains(basePort) else { throw ValidationError("--base-port must be 1024-65000") }
    }

    func run() async throws {
        let root = URL(filePath: dir, directoryHint: .isDirectory).standardizedFileURL
        let executable = URL(filePath: CommandLine.arguments[0]).resolvingSymlinksInPath().path()
        let ids = (1...masters).map { "master-\($0)" }
        try prepare(root: root, ids: ids)

        var children: [String: Process] = [:]
        func start(_ name: String, _ arguments: [String]) throws {
            let log = root.appending(path: "logs/\(name).log")
            _ = FileManager.default.createFile(atPath: log.path(), contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            handle.seekToEndOfFile()
            let process = Process()
            process.executableURL = URL(filePath: executable)
            process.arguments = arguments
            process.currentDirectoryURL = root
            process.standardOutput = handle
            process.standardError = handle
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AGENTFLOW_") }
            try process.run()
            children[name] = process
        }
        try start("signal", ["signal", "--config", "signal.yml"])
        try await Task.sleep(for: .milliseconds(300))
        for id in ids { try start(id, ["master", "--config", "\(id)/master.yml"]) }

        say("")
        for (index, id) in ids.enumerated() {
            say("Dashboard of \(id): http://127.0.0.1:\(basePort + 20 + index)/")
        }
        say("""

            AgentFlow demo mesh in \(root.path()) (\(transport), mutual TLS)
              signal server   http://127.0.0.1:\(basePort)/list   (pid \(children["signal"]!.processIdentifier))
            """)
        for (index, id) in ids.enumerated() {
            say("  \(id)        http://127.0.0.1:\(basePort + 20 + index)/api/cluster/status   (pid \(children[id]!.processIdentifier))")
        }
        say("""
              logs            \(root.path())logs/
            Try: curl -s http://127.0.0.1:\(basePort + 20)/api/cluster/status
                 kill -9 <a master's pid>, then: (cd \(root.path()) && \(executable) master --config master-2/master.yml)
            Ctrl-C stops everything.

            """)

        let http = CurlHTTPClient()
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        let watcher = Task {
            var last: [String: String] = [:]
            while !Task.isCancelled {
                for (index, id) in ids.enumerated() {
                    let line: String
                    if let response = try? await http.request("GET", "http://127.0.0.1:\(basePort + 20 + index)/api/cluster/status", timeoutMilliseconds: 1_000),
                       response.status == 200, let status = try? JSONDecoder().decode(MeshStatus.self, from: Data(response.body)) {
                        let links = status.peers.map { peer in
                            peer.state == .connected
                                ? "\(peer.nodeID) ✓ \(peer.rttMilliseconds.map { String(format: "%.2fms", $0) } ?? "")"
                                : "\(peer.nodeID) \(peer.state.rawValue)"
                        }
                        line = "\(status.linkCount)/\(ids.count - 1) links [\(links.joined(separator: ", "))] discovery \(status.local.discovery.health)"
                    } else {
                        line = "not answering"
                    }
                    // Print changes of link state, not every RTT wiggle.
                    let key = line.replacingOccurrences(of: #"[0-9.]+ms"#, with: "", options: .regularExpression)
                    if last[id] != key {
                        say("\(Self.clock()) \(id): \(line)")
                        last[id] = key
                    }
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        for await _ in signals { break }
        watcher.cancel()
        say("\nstopping…")
        for (_, process) in children where process.isRunning { process.terminate() }
        let deadline = Date().addingTimeInterval(8)
        while children.values.contains(where: \.isRunning) && Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        for (name, process) in children where process.isRunning {
            say("\(name) did not stop in time; killing it")
            kill(process.processIdentifier, SIGKILL)
        }
        say("stopped. The demo's state stays in \(root.path()) for the next run.")
    }

    /// Unbuffered, so lines appear at once even when the output is a file or a pipe.
    func say(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    static func clock() -> String {
        Date().formatted(Date.ISO8601FormatStyle().time(includingFractionalSeconds: false))
    }

    /// Certificates (first run only), configs (every run, so flags apply) and folders.
    func prepare(root: URL, ids: [String]) throws {
        let fm = FileManager.default
        for folder in ["ca", "logs"] + ids {
            try fm.createDirectory(at: root.appending(path: folder), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let caCert = root.appending(path: "ca/ca.pem")
        let caKey = root.appending(path: "ca/ca.key")
        if !fm.fileExists(atPath: caCert.path()) {
            let ca = try CertificateAuthority.makeCA(commonName: "AgentFlow demo CA")
            try Self.write(ca.certificatePEM, to: caCert, mode: 0o644)
            try Self.write(ca.privateKeyPEM, to: caKey, mode: 0o600)
            say("made a demo cluster CA in \(root.appending(path: "ca").path())")
        }
        let caPEM = try String(contentsOf: caCert, encoding: .utf8)
        let caKeyPEM = try String(contentsOf: caKey, encoding: .utf8)
        try Self.write("""
            role: signal
            http:
              listen: 127.0.0.1:\(basePort)
            stun:
              listen: 127.0.0.1:\(basePort + 1)
            registry:
              ttl: 15s
            """ + "\n", to: root.appending(path: "signal.yml"), mode: 0o644)
        for (index, id) in ids.enumerated() {
            let certs = root.appending(path: "\(id)/certs")
            if !fm.fileExists(atPath: certs.appending(path: "node.pem").path()) {
                try fm.createDirectory(at: certs, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                let issued = try CertificateAuthority.issueNodeCertificate(nodeID: NodeID(id)!, caCertificatePEM: caPEM, caPrivateKeyPEM: caKeyPEM)
                try Self.write(issued.certificatePEM, to: certs.appending(path: "node.pem"), mode: 0o644)
                try Self.write(issued.privateKeyPEM, to: certs.appending(path: "node.key"), mode: 0o600)
                try Self.write(caPEM, to: certs.appending(path: "ca.pem"), mode: 0o644)
            }
            try Self.write("""
                role: master
                node:
                  id: \(id)
                  data_dir: .
                transport:
                  kind: \(transport)
                  listen: 127.0.0.1:\(basePort + 10 + index)
                discovery:
                  kind: signal
                  url: http://127.0.0.1:\(basePort)
                  poll_interval: 1s
                mesh:
                  reconnect_max_delay: 5s
                api:
                  listen: 127.0.0.1:\(basePort + 20 + index)
                """ + "\n", to: root.appending(path: "\(id)/master.yml"), mode: 0o644)
        }
    }

    static func write(_ text: String, to url: URL, mode: Int) throws {
        try? FileManager.default.removeItem(at: url)
        guard FileManager.default.createFile(atPath: url.path(), contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw ValidationError("cannot write \(url.path())")
        }
    }
}
