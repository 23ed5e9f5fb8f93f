import Foundation
import Testing

/// Both HTTP servers (the signal server's API and a master's local API), as
/// an outsider's client sees them: HEAD, HTTP/1.0 connections, duplicate JSON keys.
@Suite("HTTP strictness, both APIs")
struct HTTPStrictnessTests {
    /// Sends `request` on a fresh connection; returns what came back and whether the server closed within `wait`.
    static func raw(_ port: Int, _ request: String, wait: Double = 1.5) throws -> (text: String, closed: Bool) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw CocoaError(.fileReadUnknown) }
        _ = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, 0) }
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(wait)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 50) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return (String(decoding: received, as: UTF8.self), true) }
            received += buffer[0..<count]
        }
        return (String(decoding: received, as: UTF8.self), false)
    }

    static func startServers() async throws -> (signal: Process, master: Process, signalPort: Int, apiPort: Int, folder: URL) {
        let base = Int.random(in: 41_000...48_000)
        let folder = FileManager.default.temporaryDirectory.appending(path: "strict-\(base)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "role: signal\nhttp:\n  listen: 127.0.0.1:\(base)\nstun:\n  enabled: false\n".write(to: folder.appending(path: "signal.yml"), atomically: true, encoding: .utf8)
        try """
            role: master
            node: {id: strict-m1, data_dir: \(folder.path())/m1}
            transport: {kind: tcp, listen: 127.0.0.1:\(base + 1)}
            tls: {mode: "off"}
            discovery: {kind: signal, url: "http://127.0.0.1:\(base)"}
            probes: {run: []}
            api: {listen: 127.0.0.1:\(base + 2)}
            """.write(to: folder.appending(path: "master.yml"), atomically: true, encoding: .utf8)
        func start(_ arguments: [String]) throws -> Process {
            let process = Process()
            process.executableURL = CLITests.executable
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        let signal = try start(["signal", "--config", folder.appending(path: "signal.yml").path()])
        let master = try start(["master", "--config", folder.appending(path: "master.yml").path()])
        for port in [base, base + 2] {
            var up = false
            for _ in 0..<200 where !up {
                try await Task.sleep(for: .milliseconds(50))
                up = (try? raw(port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait: 1).text.hasPrefix("HTTP/1.1 200")) == true
            }
            #expect(up, "nothing answers on \(port)")
        }
        return (signal, master, base, base + 2, folder)
    }

    @Test("HEAD is answered wherever GET is; HTTP/1.0 without keep-alive is closed after the answer; duplicate JSON keys are refused naming the key")
    func strictness() async throws {
        let servers = try await Self.startServers()
        defer {
            for process in [servers.signal, servers.master] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            try? FileManager.default.removeItem(at: servers.folder)
        }
        for (port, getPath) in [(servers.signalPort, "/healthz"), (servers.signalPort, "/list"), (servers.apiPort, "/healthz"), (servers.apiPort, "/api/cluster/status")] {
            let head = try Self.raw(port, "HEAD \(getPath) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(head.text.hasPrefix("HTTP/1.1 200"), "HEAD \(getPath) on \(port): \(head.text)")
            #expect(head.text.lowercased().contains("content-length: "), "\(head.text)")
            #expect(head.text.hasSuffix("\r\n\r\n"), "HEAD sent a body: \(head.text)")

            let old = try Self.raw(port, "GET \(getPath) HTTP/1.0\r\n\r\n")
            #expect(old.text.contains(" 200 "), "\(old.text)")
            #expect(old.closed, "an HTTP/1.0 connection on \(port) stayed open after the answer")
            let keepAlive = try Self.raw(port, "GET \(getPath) HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", wait: 0.5)
            #expect(!keepAlive.closed, "HTTP/1.0 with keep-alive was closed")
        }
        let register = #"{"node_id":"a","node_id":"b","endpoints":[{"transport":"tcp","host":"127.0.0.1","port":1}]}"#
        let signal = try Self.raw(servers.signalPort, "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(register.utf8.count)\r\nConnection: close\r\n\r\n\(register)")
        #expect(signal.text.hasPrefix("HTTP/1.1 400"), "\(signal.text)")
        #expect(signal.text.contains("node_id: this key appears twice"), "\(signal.text)")
        let command = #"{"target":"strict-m1","action":"ping","action":"status"}"#
        let master = try Self.raw(servers.apiPort, "POST /api/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(command.utf8.count)\r\nConnection: close\r\n\r\n\(command)")
        #expect(master.text.hasPrefix("HTTP/1.1 400"), "\(master.text)")
        #expect(master.text.contains("action: this key appears twice"), "\(master.text)")
    }
}
