import Foundation
import Testing

/// Three network namespaces and a NAT between them, built for one test and
/// torn down after it:
///
/// ```
///  home 192.168.77.10 ── r1 192.168.77.1 [router: MASQUERADE] r0 203.0.113.1 ── public 203.0.113.10, .11
/// ```
///
/// The public side holds the signal server (two addresses, for RFC 5780);
/// the home side a master or a probe. Addresses are documentation and private
/// ranges, inside namespaces only; nothing reaches the host's network.
final class NATLab: @unchecked Sendable {
    enum Mapping {
        /// Plain MASQUERADE: the source port is kept (endpoint-independent mapping).
        case masquerade
        /// MASQUERADE --random-fully: a new port per destination (symmetric).
        case randomFully
    }

    static let publicIP = "203.0.113.10"
    static let publicIP2 = "203.0.113.11"
    static let routerWAN = "203.0.113.1"
    static let homeIP = "192.168.77.10"

    let pub: String
    let router: String
    let home: String
    let folder: URL
    private var processes: [String: Process] = [:]

    /// Root and `ip netns` are needed (CI and developer machines have both).
    static var available: Bool {
        getuid() == 0 && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(_ mapping: Mapping) throws {
        let tag = String(format: "%04x%02x", getpid() & 0xFFFF, Int.random(in: 0...255))
        pub = "afpub\(tag)"
        router = "afrt\(tag)"
        home = "afhome\(tag)"
        folder = FileManager.default.temporaryDirectory.appending(path: "natlab-\(tag)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        do {
            for ns in [pub, router, home] { try Self.sh(["ip", "netns", "add", ns]) }
            try Self.sh(["ip", "link", "add", "p0", "netns", pub, "type", "veth", "peer", "name", "r0", "netns", router])
            try Self.sh(["ip", "link", "add", "h0", "netns", home, "type", "veth", "peer", "name", "r1", "netns", router])
            try Self.sh(["ip", "-n", pub, "addr", "add", "\(Self.publicIP)/24", "dev", "p0"])
            try Self.sh(["ip", "-n", pub, "addr", "add", "\(Self.publicIP2)/24", "dev", "p0"])
            try Self.sh(["ip", "-n", router, "addr", "add", "\(Self.routerWAN)/24", "dev", "r0"])
            try Self.sh(["ip", "-n", router, "addr", "add", "192.168.77.1/24", "dev", "r1"])
            try Self.sh(["ip", "-n", home, "addr", "add", "\(Self.homeIP)/24", "dev", "h0"])
            for (ns, devices) in [(pub, ["lo", "p0"]), (router, ["lo", "r0", "r1"]), (home, ["lo", "h0"])] {
                for device in devices { try Self.sh(["ip", "-n", ns, "link", "set", device, "up"]) }
            }
            try Self.sh(["ip", "-n", home, "route", "add", "default", "via", "192.168.77.1"])
            try exec(router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            // The router drops what is not an answer to itself, as a home router does.
            try exec(router, ["iptables", "-P", "INPUT", "DROP"])
            try exec(router, ["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
            var masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "r0", "-j", "MASQUERADE"]
            if mapping == .randomFully { masquerade.append("--random-fully") }
            try exec(router, masquerade)
        } catch {
            teardown()
            throw error
        }
    }

    /// A port forward on the router: TCP `port` on its WAN address to the home host.
    func forward(tcp port: Int) throws {
        try exec(router, ["iptables", "-t", "nat", "-A", "PREROUTING", "-i", "r0", "-p", "tcp", "--dport", "\(port)", "-j", "DNAT", "--to-destination", "\(Self.homeIP):\(port)"])
    }

    func teardown() {
        for process in processes.values where process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for ns in [home, router, pub] { _ = try? Self.run(["ip", "netns", "del", ns]) }
        try? FileManager.default.removeItem(at: folder)
    }

    deinit { teardown() }

    // MARK: Running things

    struct Output {
        var status: Int32
        var text: String
    }

    @discardableResult
    static func sh(_ arguments: [String]) throws -> String {
        let output = try run(arguments)
        guard output.status == 0 else { throw LabError("\(arguments.joined(separator: " ")) failed (\(output.status)): \(output.text)") }
        return output.text
    }

    @discardableResult
    func exec(_ ns: String, _ arguments: [String]) throws -> String {
        try Self.sh(["ip", "netns", "exec", ns] + arguments)
    }

    /// Runs to completion (killed after `timeout`), output through a file.
    static func run(_ arguments: [String], timeout: Double = 60, directory: URL? = nil, environment: [String: String] = [:]) throws -> Output {
        let file = FileManager.default.temporaryDirectory.appending(path: "natlab-out-\(UUID().uuidString.prefix(8))")
        FileManager.default.createFile(atPath: file.path(), contents: nil)
        defer { try? FileManager.default.removeItem(at: file) }
        let handle = try FileHandle(forWritingTo: file)
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        if let directory { process.currentDirectoryURL = directory }
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AGENTFLOW_") }.merging(environment) { $1 }
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try handle.close()
        return Output(status: process.terminationStatus, text: (try? String(contentsOf: file, encoding: .utf8)) ?? "")
    }

    func run(_ ns: String, _ arguments: [String], timeout: Double = 60, environment: [String: String] = [:]) throws -> Output {
        try Self.run(["ip", "netns", "exec", ns] + arguments, timeout: timeout, directory: folder, environment: environment)
    }

    /// Starts a long-running process in `ns`; its output goes to `folder/<name>.log`. Killed at teardown.
    func spawn(_ ns: String, name: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let log = folder.appending(path: "\(name).log")
        FileManager.default.createFile(atPath: log.path(), contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", ns] + arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        process.currentDirectoryURL = folder
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AGENTFLOW_") }.merging(environment) { $1 }
        try process.run()
        processes[name] = process
    }

    /// SIGKILLs what `spawn` started as `name` (only that process: namespaces do not separate PIDs).
    func kill(_ name: String) {
        guard let process = processes[name], process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func log(_ name: String) -> String {
        (try? String(contentsOf: folder.appending(path: "\(name).log"), encoding: .utf8)) ?? ""
    }

    /// Waits until `ns` has something listening on `port` (TCP or UDP).
    func waitListening(_ ns: String, port: Int, udp: Bool = false, within seconds: Double = 15) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let output = try run(ns, ["ss", udp ? "-lnu" : "-lnt"], timeout: 5)
            if output.text.contains(":\(port) ") { return }
            usleep(100_000)
        }
        throw LabError("nothing listens on \(port) in \(ns) after \(seconds) s")
    }

    // MARK: AgentFlow pieces

    static let token = "nat-lab-cluster-token-0123456789"

    /// The signal server in the public namespace: HTTP on 7070, STUN on 3478 with the alternate .11:3479.
    func startSignal(alternate: Bool = true) throws {
        let config = folder.appending(path: "signal.yml")
        try """
            role: signal
            http:
              listen: \(Self.publicIP):7070
            auth:
              token: \(Self.token)
            stun:
              listen: \(Self.publicIP):3478
            \(alternate ? "  alternate: \(Self.publicIP2):3479" : "")
            reach:
              min_interval: 1s
              timeout: 2s
            """.write(to: config, atomically: true, encoding: .utf8)
        try spawn(pub, name: "signal", [Self.agentflow.path(), "signal", "--config", config.path()])
        try waitListening(pub, port: 7070)
        try waitListening(pub, port: alternate ? 3479 : 3478, udp: true)
    }

    /// The built `agentflow`, next to the test bundle.
    static var agentflow: URL {
        var folder = URL(filePath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while !FileManager.default.isExecutableFile(atPath: folder.appending(path: "agentflow").path()) && folder.path() != "/" {
            folder = folder.deletingLastPathComponent()
        }
        return folder.appending(path: "agentflow")
    }

    /// `agentflow probe NAMES --json` in `ns`: the reports by probe name.
    func probe(_ ns: String, _ arguments: [String], environment: [String: String] = [:]) throws -> [String: [String: Any]] {
        let output = try run(ns, [Self.agentflow.path(), "probe", "--json"] + arguments, timeout: 90, environment: environment)
        guard let start = output.text.firstIndex(of: "{"),
              let json = try JSONSerialization.jsonObject(with: Data(output.text[start...].utf8)) as? [String: Any],
              let probes = json["probes"] as? [[String: Any]]
        else { throw LabError("agentflow probe printed no JSON (exit \(output.status)): \(output.text)") }
        var reports: [String: [String: Any]] = [:]
        for report in probes { if let name = report["probe"] as? String { reports[name] = report } }
        return reports
    }
}

/// One fact of a probe report in `agentflow probe --json` output.
func fact(_ report: [String: Any]?, _ name: String) -> String? {
    (report?["facts"] as? [[String: Any]])?.first { $0["name"] as? String == name }?["value"] as? String
}

struct LabError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension NATLab {
    /// A cluster CA and a certificate for each node, under `folder/<id>/certs`.
    func makeCertificates(_ ids: [String]) throws {
        let ca = folder.appending(path: "ca").path()
        try Self.sh([Self.agentflow.path(), "certs", "ca", "--dir", ca])
        for id in ids {
            try Self.sh([Self.agentflow.path(), "certs", "node", id, "--ca-dir", ca, "--out", folder.appending(path: "\(id)/certs").path()])
        }
    }

    /// Writes a master config for `id` and starts it in `ns`; its API listens on 127.0.0.1:8080 there.
    func startMaster(_ id: String, in ns: String, listen: String, extra: String = "") throws {
        let config = folder.appending(path: "\(id).yml")
        try """
            role: master
            node:
              id: \(id)
              data_dir: \(folder.appending(path: id).path())
            transport:
              kind: tcp
              listen: \(listen)
              connect_timeout: 1s
            discovery:
              kind: signal
              url: http://\(Self.publicIP):7070
              token: \(Self.token)
              poll_interval: 1s
            mesh:
              ping_interval: 1s
              peer_timeout: 4s
              reconnect_max_delay: 2s
              peer_exchange_interval: 1s
            probes:
              run: [stun, reach]
              initial_delay: 1s
              interval: 10s
              timeout: 15s
            \(extra)
            """.write(to: config, atomically: true, encoding: .utf8)
        try spawn(ns, name: id, [Self.agentflow.path(), "master", "--config", config.path()])
    }

    /// `GET /api/cluster/status` of the master in `ns`.
    func status(_ ns: String) throws -> [String: Any] {
        let output = try run(ns, ["curl", "-sf", "--max-time", "3", "http://127.0.0.1:8080/api/cluster/status"], timeout: 5)
        guard output.status == 0, let json = try? JSONSerialization.jsonObject(with: Data(output.text.utf8)) as? [String: Any] else {
            throw LabError("no status from the master in \(ns) (curl \(output.status)): \(output.text)")
        }
        return json
    }

    /// Polls `condition` on `ns`'s status every 250 ms for `seconds`; returns the last status.
    func waitStatus(_ ns: String, within seconds: Double, _ what: String, _ condition: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        var last: [String: Any] = [:]
        while Date() < deadline {
            if let status = try? status(ns) {
                last = status
                if condition(status) { return status }
            }
            usleep(250_000)
        }
        throw LabError("\(what): not within \(seconds) s; last status: \(last)")
    }
}

/// The status's view of one peer.
func peer(_ status: [String: Any], _ id: String) -> [String: Any]? {
    let mesh = status["mesh"] as? [String: Any] ?? status
    return (mesh["peers"] as? [[String: Any]])?.first { $0["node_id"] as? String == id }
}

/// The status's local section.
func local(_ status: [String: Any]) -> [String: Any]? {
    let mesh = status["mesh"] as? [String: Any] ?? status
    return mesh["local"] as? [String: Any]
}
