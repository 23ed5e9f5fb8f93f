import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowMesh
import AgentFlowTLS
import Foundation
import Synchronization
import Testing

/// A test cluster of real processes: a CA, certificates, configs and logs in
/// a temporary folder; `agentflow signal` and `agentflow master` started,
/// killed and restarted as an operator would. Every process is killed when
/// the harness is stopped, and every wait is bounded.
final class ClusterHarness: @unchecked Sendable {
    enum Discovery {
        case signal
        /// A peers file listing these nodes (ids of masters started by this harness).
        case staticPeers([String])
    }

    let root: URL
    let transport: String
    let caPEM: String
    let caKeyPEM: String
    private(set) var signalPort = 0
    private(set) var stunPort = 0
    private var processes: [String: Process] = [:]
    private var ports: [String: (p2p: Int, api: Int)] = [:]
    /// Nodes that speak other transports than `transport`, in their order of preference.
    var nodeTransports: [String: [String]] = [:]
    /// Leave the liveness timings (keepalive, ping, peer timeouts) at their shipped defaults
    /// instead of the harness's fast ones: for tests of the defaults themselves.
    var shippedTimings = false
    private var extraPorts: [String: [Int]] = [:]
    private let http = CurlHTTPClient()

    init(transport: String, name: String = #function) throws {
        self.transport = transport
        root = FileManager.default.temporaryDirectory.appending(path: "agentflow-mesh-\(transport)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root.appending(path: "logs"), withIntermediateDirectories: true)
        let ca = try CertificateAuthority.makeCA()
        caPEM = ca.certificatePEM
        caKeyPEM = ca.privateKeyPEM
        signalPort = try freePort()
        stunPort = try freePort()
    }

    /// Kills everything and removes the folder (kept when AGENTFLOW_KEEP_TEST_FILES is set, for a failing test's logs).
    func stop() {
        for (_, process) in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        processes.removeAll()
        if ProcessInfo.processInfo.environment["AGENTFLOW_KEEP_TEST_FILES"] == nil {
            try? FileManager.default.removeItem(at: root)
        }
    }

    deinit { stop() }

    static var executable: URL {
        var folder = URL(filePath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while !FileManager.default.isExecutableFile(atPath: folder.appending(path: "agentflow").path()) && folder.path() != "/" {
            folder = folder.deletingLastPathComponent()
        }
        return folder.appending(path: "agentflow")
    }

    // MARK: Processes

    @discardableResult
    func launch(_ name: String, _ arguments: [String]) throws -> Process {
        if let old = processes[name], old.isRunning { throw HarnessError("\(name) is already running") }
        let log = root.appending(path: "logs/\(name).log")
        if !FileManager.default.fileExists(atPath: log.path()) { _ = FileManager.default.createFile(atPath: log.path(), contents: nil) }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        process.currentDirectoryURL = root
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AGENTFLOW_") }
        try process.run()
        try? handle.close()
        processes[name] = process
        return process
    }

    func signal(_ name: String, _ signal: Int32) {
        guard let process = processes[name], process.isRunning else { return }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    func isRunning(_ name: String) -> Bool { processes[name]?.isRunning == true }

    func process(_ name: String) -> Process? { processes[name] }

    /// Node ids the signal server lists now.
    func signalList() async throws -> [String] {
        let response = try await http.request("GET", "http://127.0.0.1:\(signalPort)/list", timeoutMilliseconds: 2_000)
        struct List: Decodable { struct Node: Decodable { var node_id: String }; var nodes: [Node] }
        return try JSONDecoder().decode(List.self, from: Data(response.body)).nodes.map(\.node_id)
    }

    func log(_ name: String) -> String {
        (try? String(contentsOf: root.appending(path: "logs/\(name).log"), encoding: .utf8)) ?? ""
    }

    // MARK: Signal server

    func startSignal() throws {
        let config = root.appending(path: "signal.yml")
        try """
            role: signal
            http:
              listen: 127.0.0.1:\(signalPort)
            stun:
              listen: 127.0.0.1:\(stunPort)
            registry:
              ttl: 3s
              sweep_interval: 250ms
            """.write(to: config, atomically: true, encoding: .utf8)
        try launch("signal", ["signal", "--config", config.path()])
        try waitForHTTP("http://127.0.0.1:\(signalPort)/healthz", process: "signal")
    }

    // MARK: Masters

    /// Issues a certificate for `certificateFor` (default: the node's own id) by `ca` (default: the cluster CA).
    func writeCertificates(node: String, certificateFor: String? = nil, foreignCA: CertificateAuthority.Issued? = nil) throws {
        let certs = root.appending(path: "\(node)/certs")
        try FileManager.default.createDirectory(at: certs, withIntermediateDirectories: true)
        let issued = try CertificateAuthority.issueNodeCertificate(
            nodeID: NodeID(certificateFor ?? node)!, caCertificatePEM: foreignCA?.certificatePEM ?? caPEM, caPrivateKeyPEM: foreignCA?.privateKeyPEM ?? caKeyPEM)
        try issued.certificatePEM.write(to: certs.appending(path: "node.pem"), atomically: true, encoding: .utf8)
        try issued.privateKeyPEM.write(to: certs.appending(path: "node.key"), atomically: true, encoding: .utf8)
        try caPEM.write(to: certs.appending(path: "ca.pem"), atomically: true, encoding: .utf8)
    }

    func ports(of node: String) throws -> (p2p: Int, api: Int) {
        if let known = ports[node] { return known }
        let allocated = (try freePort(), try freePort())
        ports[node] = allocated
        return allocated
    }

    func endpoint(of node: String) throws -> String { "\(transport)://127.0.0.1:\(try ports(of: node).p2p)" }

    /// Writes `node`'s config and peers file. Certificates are made on first use.
    func writeMaster(_ node: String, discovery: Discovery, maxPeers: Int = 0, retainedEvents: Int = 4_096, apiToken: String? = nil, extra: String = "") throws {
        let folder = root.appending(path: node)
        if !FileManager.default.fileExists(atPath: folder.appending(path: "certs/node.pem").path()) {
            try writeCertificates(node: node)
        }
        let (p2p, api) = try ports(of: node)
        let discoveryBlock: String
        switch discovery {
        case .signal:
            discoveryBlock = """
                discovery:
                  kind: signal
                  url: http://127.0.0.1:\(signalPort)
                  poll_interval: 300ms
                  request_timeout: 1s
                """
        case .staticPeers(let peers):
            try writePeersFile(node, peers: peers)
            discoveryBlock = """
                discovery:
                  kind: static
                  file: peers.yml
                  reload_interval: 200ms
                """
        }
        let kinds = nodeTransports[node] ?? [transport]
        if extraPorts[node] == nil { extraPorts[node] = try kinds.dropFirst().map { _ in try freePort() } }
        let listens = ([p2p] + extraPorts[node]!).map { "127.0.0.1:\($0)" }
        try """
            role: master
            node:
              id: \(node)
              data_dir: .
            log:
              level: debug
            transport:
              kind: [\(kinds.joined(separator: ", "))]
              listen: [\(listens.joined(separator: ", "))]
            \(shippedTimings ? "" : "  keepalive_interval: 500ms\n  dead_peer_timeout: 10s")
            \(discoveryBlock)
            mesh:
              max_peers: \(maxPeers)
            \(shippedTimings ? "" : "  ping_interval: 300ms\n  peer_timeout: 3s")
              reconnect_max_delay: 1s
              peer_exchange_interval: 1s
            api:
              listen: 127.0.0.1:\(api)
            \(apiToken.map { "  token: \($0)" } ?? "")
            state:
              sync_interval: 1s
              retained_events: \(retainedEvents)
            monitor:
              interval: 1s
            \(extra)
            """.write(to: folder.appending(path: "master.yml"), atomically: true, encoding: .utf8)
    }

    func writePeersFile(_ node: String, peers: [String]) throws {
        let folder = root.appending(path: node)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var text = "peers:\n"
        for peer in peers { text += "  - id: \(peer)\n    endpoints: [\"\(try endpoint(of: peer))\"]\n" }
        if peers.isEmpty { text = "peers: []\n" }
        try text.write(to: folder.appending(path: "peers.yml"), atomically: true, encoding: .utf8)
    }

    func startMaster(_ node: String, discovery: Discovery? = nil, maxPeers: Int = 0, retainedEvents: Int = 4_096, apiToken: String? = nil, extra: String = "") throws {
        if let discovery { try writeMaster(node, discovery: discovery, maxPeers: maxPeers, retainedEvents: retainedEvents, apiToken: apiToken, extra: extra) }
        try launch(node, ["master", "--config", root.appending(path: "\(node)/master.yml").path()])
        try waitForHTTP("http://127.0.0.1:\(try ports(of: node).api)/healthz", process: node)
    }

    // MARK: Observing

    func status(_ node: String) async throws -> MeshStatus {
        let response = try await http.request("GET", "http://127.0.0.1:\(try ports(of: node).api)/api/cluster/status", timeoutMilliseconds: 2_000)
        guard response.status == 200 else { throw HarnessError("status of \(node): HTTP \(response.status)") }
        return try JSONDecoder().decode(MeshStatus.self, from: Data(response.body))
    }

    /// `node`'s merged cluster view (`GET /api/cluster/status`).
    func view(_ node: String) async throws -> ClusterView {
        let response = try await http.request("GET", "http://127.0.0.1:\(try ports(of: node).api)/api/cluster/status", timeoutMilliseconds: 2_000)
        guard response.status == 200 else { throw HarnessError("status of \(node): HTTP \(response.status)") }
        return try JSONDecoder().decode(ClusterView.self, from: Data(response.body))
    }

    /// A sample from `node`'s /metrics: the line starting with `series` (name and labels).
    func metric(_ node: String, _ series: String) async throws -> Double {
        let response = try await http.request("GET", "http://127.0.0.1:\(try ports(of: node).api)/metrics", timeoutMilliseconds: 2_000)
        let text = String(decoding: response.body, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(series + " ") }), let value = Double(line.split(separator: " ").last ?? "") else {
            throw HarnessError("\(node) has no metric \(series)")
        }
        return value
    }

    /// A raw request to `node`'s API: status and body text.
    func raw(_ node: String, _ method: String, _ path: String, headers: [String] = [], body: [UInt8]? = nil) async throws -> (status: Int, body: String) {
        let response = try await http.request(method, "http://127.0.0.1:\(try ports(of: node).api)\(path)", headers: headers, body: body, timeoutMilliseconds: 5_000)
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    /// POSTs JSON to `node`'s API; returns the status and the decoded body.
    @discardableResult
    func post(_ node: String, _ path: String, _ json: [String: Any]) async throws -> (status: Int, body: [String: Any]) {
        let data = try JSONSerialization.data(withJSONObject: json)
        let response = try await http.request("POST", "http://127.0.0.1:\(try ports(of: node).api)\(path)", headers: ["Content-Type: application/json"],
                                              body: Array(data), timeoutMilliseconds: 30_000)
        return (response.status, (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:])
    }

    func connectedPeers(_ node: String) async -> Set<String> {
        guard let status = try? await status(node) else { return [] }
        return Set(status.peers.filter { $0.state == .connected }.map(\.nodeID))
    }

    /// Starts `nodes` (and the signal server, for `.signal`) and waits for their full mesh.
    func startMesh(_ nodes: [String], discovery: Discovery) async throws {
        if case .signal = discovery, !isRunning("signal") { try startSignal() }
        for node in nodes {
            let own: Discovery
            if case .staticPeers = discovery { own = .staticPeers(nodes.filter { $0 != node }) } else { own = discovery }
            try startMaster(node, discovery: own)
        }
        try await waitForFullMesh(nodes)
    }

    /// Waits until every node in `nodes` holds exactly its preferred neighbours under `maxPeers` (a ring at 2).
    func waitForPreferredPeers(_ nodes: [String], maxPeers: Int, timeout: Duration = .seconds(30)) async throws {
        let members = Set(nodes.compactMap { NodeID($0) })
        try await eventually("every node to hold exactly its preferred neighbours", timeout: timeout) {
            for node in nodes {
                let expected = Set(MeshTopology.preferredPeers(of: NodeID(node)!, among: members, maxPeers: maxPeers).map(\.rawValue))
                if await self.connectedPeers(node) != expected { return false }
            }
            return true
        }
    }

    /// Waits until every node in `nodes` has a live link to every other.
    func waitForFullMesh(_ nodes: [String], timeout: Duration = .seconds(20)) async throws {
        try await eventually("a full mesh of \(nodes)", timeout: timeout) {
            for node in nodes {
                if await self.connectedPeers(node) != Set(nodes).subtracting([node]) { return false }
            }
            return true
        } describe: {
            var lines: [String] = []
            for node in nodes { lines.append("\(node): \(await self.connectedPeers(node).sorted())") }
            return lines.joined(separator: "; ")
        }
    }

    /// Waits for `url` to answer 200; on timeout the error carries the end of `process`'s log (why it did not come up).
    func waitForHTTP(_ url: String, process name: String, timeout: Duration = .seconds(15)) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let handle = try? CurlEasyHandle(), let response = try? handle.get(url, timeoutMilliseconds: 500), response.status == 200 { return }
            if processes[name]?.isRunning == false { break }  // it exited: no use waiting
            usleep(50_000)
        }
        let log = (try? String(contentsOf: root.appending(path: "logs/\(name).log"), encoding: .utf8)) ?? ""
        let tail = log.split(separator: "\n").suffix(12).joined(separator: "\n")
        throw HarnessError("\(url) did not answer within \(timeout) (\(name) \(processes[name]?.isRunning == true ? "running" : "exited")); its log ends:\n\(tail)")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` until true or `timeout`; fails with `describe()` (the state seen last).
func eventually(
    _ what: String, timeout: Duration = .seconds(15), every interval: Duration = .milliseconds(150),
    _ condition: @escaping @Sendable () async throws -> Bool,
    describe: @escaping @Sendable () async -> String = { "" }
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: interval)
    }
    throw HarnessError("timed out after \(timeout) waiting for \(what). Last seen: \(await describe())")
}

/// A port nothing listens on now (bound to 0 and released).
/// A port free for both TCP and UDP on 127.0.0.1, chosen below the kernel's
/// ephemeral range (32768–60999 here). Processes in these tests are killed and
/// restarted on the same ports; a port from the ephemeral range could meanwhile
/// be taken as the local port of some outgoing connection or STUN socket, and
/// the restart would fail to bind (seen once in CI). Ports below the range are
/// only ever taken by an explicit bind.
func freePort() throws -> Int {
    for _ in 0..<500 {
        let port = Int.random(in: 20_000...32_000)
        if canBind(port, type: Int32(SOCK_STREAM.rawValue)) && canBind(port, type: Int32(SOCK_DGRAM.rawValue)) { return port }
    }
    throw HarnessError("no free port in 20000–32000")
}

private func canBind(_ port: Int, type: Int32) -> Bool {
    let fd = socket(AF_INET, type, 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let length = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } } == 0
}

/// The parts of `GET /api/cluster/status` the cluster tests read.
struct ClusterView: Decodable {
    struct State: Decodable {
        struct Task: Decodable { var task: String; var state: String; var restarts: UInt32 }
        struct Line: Decodable { var task: String; var line: String }
        struct Alert: Decodable { var alert_id: String }
        var tasks: [Task]
        var recent_logs: [Line]
        var alerts: [Alert]
    }
    struct Local: Decodable {
        var node_id: String
        var incarnation: UInt64
        var last_sequence: UInt64
        var state: State?
    }
    struct Remote: Decodable {
        var node_id: String
        var incarnation: UInt64
        var last_sequence: UInt64
        var last_event_at: String?
        var freshness_ms: Int64?
        var path: String
        var state: State
    }
    var local: Local
    var remote: [Remote]

    func remote(_ id: String) -> Remote? { remote.first { $0.node_id == id } }
}
