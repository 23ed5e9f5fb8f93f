import AgentFlowCore
import AgentFlowDiscovery
import ArgumentParser
import Foundation

/// What a master costs in memory, as real processes of one or more builds of
/// `agentflow`, measured in one sitting: RSS (total, anonymous, file-backed)
/// of an idle master linked to 10 peers, of the same master publishing 1,000
/// events/s, the time from exec to its first link, and the binary's size and
/// Swift shared libraries.
struct FootprintBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "footprint", abstract: "RSS of a master (idle with 10 peers, and at 1,000 events/s), start-up time, binary size.")

    @Option(name: .customLong("binary"), help: "An agentflow binary to measure (repeat to compare builds in one run).")
    var binaries: [String] = []

    @Option(help: "Peers linked to the measured master.")
    var peers = 10

    @Option(help: "Seconds to let the idle mesh settle before reading RSS (masters release their start-up pages 30 s after start).")
    var settle: Double = 35

    @Option(help: "Seconds of the working-set window (accessed bits cleared, then counted).")
    var window: Double = 5

    @Option(help: "Seconds of publishing at --rate before reading RSS.")
    var seconds: Double = 10

    @Option(help: "Events per second published on the measured master.")
    var rate = 1_000

    @Option(help: "Start-up runs per binary (the median is reported).")
    var startups = 5

    func run() async throws {
        guard !binaries.isEmpty else { throw ValidationError("give at least one --binary") }
        print("footprint: one master linked to \(peers) peers (tcp, mTLS, static discovery), real processes on 127.0.0.1")
        print("| binary | size MiB | Swift libs (ldd) | idle RSS MiB | idle RssAnon | idle RssFile | idle working set | RSS at \(rate)/s | RssAnon at \(rate)/s | working set at \(rate)/s | start → first link (median) |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for binary in binaries {
            let size = Double((try FileManager.default.attributesOfItem(atPath: binary)[.size] as? Int) ?? 0) / 1_048_576
            let swiftLibraries = Self.swiftLibraries(of: binary)
            let mesh = try FootprintMesh(binary: binary, peers: peers)
            defer { mesh.stop() }
            try await mesh.startAll()
            try await mesh.waitForLinks(of: "m00", count: peers, timeout: .seconds(60))
            try await Task.sleep(for: .seconds(settle))
            let idle = mesh.memory(of: "m00")
            // The working set: pages touched in a window (accessed bits cleared, then read back).
            mesh.clearReferenced("m00")
            try await Task.sleep(for: .seconds(window))
            let idleWorkingSet = mesh.referenced("m00")
            mesh.clearReferenced("m00")
            try await mesh.publish(on: "m00", rate: rate, seconds: seconds)
            let busyWorkingSet = mesh.referenced("m00")
            let busy = mesh.memory(of: "m00")
            var startupTimes: [Double] = []
            for _ in 0..<startups {
                startupTimes.append(try await mesh.restartAndTimeFirstLink("m00"))
            }
            startupTimes.sort()
            print(String(format: "| %@ | %.1f | %@ | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f ms |",
                         binary, size, swiftLibraries.isEmpty ? "none" : swiftLibraries.joined(separator: " "),
                         idle.rss, idle.anon, idle.file, idleWorkingSet, busy.rss, busy.anon, busyWorkingSet,
                         startupTimes[startupTimes.count / 2] * 1_000))
        }
    }

    /// The Swift runtime libraries `ldd` lists for `binary`.
    static func swiftLibraries(of binary: String) -> [String] {
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/ldd")
        process.arguments = [binary]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return ["(ldd failed)"] }
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let swiftNames = ["libswift", "libFoundation", "lib_Foundation", "libdispatch", "libBlocksRuntime", "libTesting", "libXCTest"]
        return text.split(separator: "\n").compactMap { line in
            let name = line.trimmingCharacters(in: .whitespaces).split(separator: " ").first.map(String.init) ?? ""
            return swiftNames.contains { name.hasPrefix($0) } ? name : nil
        }
    }
}

/// Masters m00…mNN as processes of one binary, every one listing all others in its peers file.
final class FootprintMesh: @unchecked Sendable {
    let binary: String
    let root: URL
    let ids: [String]
    let pki: BenchPKI
    private var processes: [String: Process] = [:]
    private var ports: [String: (p2p: Int, api: Int)] = [:]
    private let http = CurlHTTPClient()

    init(binary: String, peers: Int) throws {
        self.binary = binary
        root = FileManager.default.temporaryDirectory.appending(path: "agentflow-footprint-\(UUID().uuidString.prefix(8))")
        ids = (0...peers).map { String(format: "m%02d", $0) }
        pki = try BenchPKI()
        let base = Int.random(in: 21_000...27_000)
        for (index, id) in ids.enumerated() { ports[id] = (base + 2 * index, base + 2 * index + 1) }
        for id in ids {
            let folder = root.appending(path: id)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            guard case .mutualTLS(let files) = try pki.security(id) else { throw BenchError("no certificates") }
            let peerLines = ids.filter { $0 != id }.map { "  - id: \($0)\n    endpoints: [tcp://127.0.0.1:\(ports[$0]!.p2p)]" }
            try ("peers:\n" + peerLines.joined(separator: "\n") + "\n").write(to: folder.appending(path: "peers.yml"), atomically: true, encoding: .utf8)
            try """
                role: master
                node: {id: \(id), data_dir: .}
                log: {level: warning}
                transport: {kind: tcp, listen: "127.0.0.1:\(ports[id]!.p2p)"}
                tls: {ca_file: \(files.caCertificateFile), cert_file: \(files.certificateFile), key_file: \(files.privateKeyFile)}
                discovery: {kind: static, file: peers.yml, reload_interval: 1s}
                mesh: {reconnect_max_delay: 1s}
                api: {listen: "127.0.0.1:\(ports[id]!.api)"}
                """.write(to: folder.appending(path: "master.yml"), atomically: true, encoding: .utf8)
        }
    }

    func stop() {
        for process in processes.values where process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        pki.remove()
        try? FileManager.default.removeItem(at: root)
    }

    func launch(_ id: String) throws {
        let process = Process()
        // The measured master runs its own copy, as on its own host: pages of a
        // file that other processes map too are shared, and not its alone to give back.
        let own = root.appending(path: "\(id)/agentflow").path()
        if id == ids[0] && !FileManager.default.fileExists(atPath: own) { try FileManager.default.copyItem(atPath: binary, toPath: own) }
        process.executableURL = URL(filePath: id == ids[0] ? own : binary)
        process.arguments = ["master", "--config", "master.yml"]
        process.currentDirectoryURL = root.appending(path: id)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes[id] = process
    }

    func startAll() async throws {
        for id in ids { try launch(id) }
    }

    func connected(_ id: String) async -> Int? {
        guard let response = try? await http.request("GET", "http://127.0.0.1:\(ports[id]!.api)/api/cluster/status", timeoutMilliseconds: 1_000),
              response.status == 200,
              let json = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else { return nil }
        return json["link_count"] as? Int
    }

    func waitForLinks(of id: String, count: Int, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let links = await connected(id), links >= count { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw BenchError("\(id) did not reach \(count) links within \(timeout)")
    }

    /// Stops `id`, starts it again, and returns the seconds from exec to its first link.
    func restartAndTimeFirstLink(_ id: String) async throws -> Double {
        if let process = processes[id], process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try await Task.sleep(for: .milliseconds(300))
        let started = ContinuousClock.now
        try launch(id)
        while ContinuousClock.now - started < .seconds(30) {
            if let links = await connected(id), links >= 1 { return (ContinuousClock.now - started).inSeconds }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw BenchError("\(id) did not link within 30 s of its start")
    }

    /// Publishes `rate` log lines a second on `id` (10 per request) for `seconds`.
    func publish(on id: String, rate: Int, seconds: Double) async throws {
        let perRequest = 10
        let interval = Duration.seconds(Double(perRequest) / Double(rate))
        let url = "http://127.0.0.1:\(ports[id]!.api)/api/publish/logs"
        let body = Array(#"{"task":"bench","lines":["#.utf8) + Array((0..<perRequest).map { "\"line \($0) of a busy task's output\"" }.joined(separator: ",").utf8) + Array("]}".utf8)
        var next = ContinuousClock.now
        let end = next + .seconds(seconds)
        while ContinuousClock.now < end {
            _ = try await http.request("POST", url, headers: ["Content-Type: application/json"], body: body, timeoutMilliseconds: 2_000)
            next += interval
            if next > ContinuousClock.now { try await Task.sleep(until: next) }
        }
    }

    /// Clears the accessed bits of every page `id` maps (`/proc/PID/clear_refs`).
    func clearReferenced(_ id: String) {
        guard let pid = processes[id]?.processIdentifier else { return }
        try? "1".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8)
    }

    /// MiB of `id`'s pages accessed since `clearReferenced` (smaps_rollup's Referenced).
    func referenced(_ id: String) -> Double {
        guard let pid = processes[id]?.processIdentifier,
              let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8),
              let line = rollup.split(separator: "\n").first(where: { $0.hasPrefix("Referenced:") }),
              let kib = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
        return kib / 1_024
    }

    /// VmRSS, RssAnon and RssFile (+ RssShmem) of `id`, in MiB.
    func memory(of id: String) -> (rss: Double, anon: Double, file: Double) {
        guard let pid = processes[id]?.processIdentifier else { return (.nan, .nan, .nan) }
        return (procStatusMiB(pid: pid, "VmRSS"), procStatusMiB(pid: pid, "RssAnon"),
                procStatusMiB(pid: pid, "RssFile") + procStatusMiB(pid: pid, "RssShmem"))
    }
}
