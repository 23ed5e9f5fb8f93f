import AgentFlowDiscovery
import Foundation

/// A signal server in its own process on free loopback ports, so its CPU and
/// memory can be read from /proc apart from the load generator's.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let httpPort: Int
    let stunPort: Int
    var base: String { "http://127.0.0.1:\(httpPort)" }

    init(binary: String) throws {
        httpPort = Int.random(in: 20_000...30_000)
        stunPort = httpPort + 10_000
        let config = FileManager.default.temporaryDirectory.appending(path: "bench-signal-\(httpPort).yml")
        try """
            role: signal
            log: {level: error}
            http: {listen: "127.0.0.1:\(httpPort)"}
            stun: {listen: "127.0.0.1:\(stunPort)"}
            registry: {max_nodes: 100000, ttl: 30s}
            """.write(to: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(filePath: binary)
        process.arguments = ["signal", "--config", config.path()]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let probe = try CurlEasyHandle()
        for _ in 0..<100 {
            if (try? probe.get("\(base)/healthz", timeoutMilliseconds: 200))?.status == 200 { return }
            usleep(50_000)
        }
        stop()
        throw BenchError("the signal server did not start (\(binary))")
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// User + system CPU seconds of the server so far.
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return .nan }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state(0) ... utime(11) stime(12), in clock ticks.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return .nan }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func rssMiB() -> Double { procStatusMiB(pid: process.processIdentifier, "VmRSS") }
}

/// A kB field of `/proc/PID/status` (`VmRSS`, `RssAnon`, …) in MiB; NaN when unreadable.
func procStatusMiB(pid: Int32, _ field: String) -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
          let kib = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
    return kib / 1_024
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
