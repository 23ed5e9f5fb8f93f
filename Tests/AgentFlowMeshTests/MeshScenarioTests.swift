import AgentFlowCore
import AgentFlowMesh
import AgentFlowTLS
import Foundation
import Testing

/// The mesh as operators meet it: real `agentflow` processes on 127.0.0.1,
/// real mTLS, killed and restarted with signals.
@Suite("Mesh scenarios (real processes)", .serialized)
struct MeshScenarioTests {
    static let matrix: [(String, String)] = [("grpc", "signal"), ("grpc", "static"), ("tcp", "signal"), ("tcp", "static")]

    static func discovery(_ kind: String, peersOf node: String, among nodes: [String]) -> ClusterHarness.Discovery {
        kind == "signal" ? .signal : .staticPeers(nodes.filter { $0 != node })
    }

    @Test("three masters form a full mesh; a SIGKILLed master is reconnected after its restart", arguments: matrix)
    func fullMeshAndRestart(transport: String, discovery: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        if discovery == "signal" { try cluster.startSignal() }
        for node in nodes { try cluster.startMaster(node, discovery: Self.discovery(discovery, peersOf: node, among: nodes)) }
        try await cluster.waitForFullMesh(nodes)

        let before = try await cluster.status("m1").peers.first { $0.nodeID == "m2" }?.connectedSince
        cluster.signal("m2", SIGKILL)
        try await eventually("m1 and m3 to notice m2 is gone", timeout: .seconds(8)) {
            let m1 = await cluster.connectedPeers("m1")
            let m3 = await cluster.connectedPeers("m3")
            return !m1.contains("m2") && !m3.contains("m2")
        }
        try cluster.startMaster("m2")
        try await cluster.waitForFullMesh(nodes)
        let after = try await cluster.status("m1").peers.first { $0.nodeID == "m2" }
        #expect(after?.connectedSince != before, "m1's link to m2 is a new one")

        if discovery == "static" {
            // Removing a line closes its link, and the removed node cannot come back in by dialling.
            try cluster.writePeersFile("m1", peers: ["m2"])
            try await eventually("m1 to drop m3 after it left m1's peers file") { await cluster.connectedPeers("m1") == ["m2"] }
            try await Task.sleep(for: .seconds(2))
            let linkedM1 = await cluster.connectedPeers("m1")
            #expect(linkedM1 == ["m2"], "m3 still lists m1 and m2 relays m3 in its peer exchange; m1 keeps it out")
            let linkedM3 = await cluster.connectedPeers("m3")
            #expect(linkedM3 == ["m2"])
            try cluster.writePeersFile("m1", peers: ["m2", "m3"])
            try await cluster.waitForFullMesh(nodes)
        }
    }

    @Test("signal server killed: links stay up and keep carrying messages; back up: a fourth master joins", arguments: ["grpc", "tcp"])
    func signalServerOutage(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .signal)
        let before = try await cluster.status("m1")

        cluster.signal("signal", SIGKILL)
        // Longer than the registry TTL, the peer timeout and several polls.
        try await Task.sleep(for: .seconds(4))
        let during = try await cluster.status("m1")
        #expect(during.local.discovery.health == "degraded")
        for peer in before.peers {
            let now = during.peers.first { $0.nodeID == peer.nodeID }
            #expect(now?.state == .connected, "\(peer.nodeID) stays linked")
            #expect(now?.connectedSince == peer.connectedSince, "\(peer.nodeID): the same link, never torn down")
            #expect((now?.messagesReceived ?? 0) > (peer.messagesReceived ?? 0), "\(peer.nodeID): the link keeps carrying messages")
        }
        for node in ["m2", "m3"] {
            let linked = await cluster.connectedPeers(node)
            #expect(linked == Set(nodes).subtracting([node]))
        }

        try cluster.startSignal()
        try cluster.startMaster("m4", discovery: .signal)
        try await cluster.waitForFullMesh(nodes + ["m4"])
        try await eventually("m1 to see the signal server healthy again") { try await cluster.status("m1").local.discovery.health == "healthy" }
    }

    @Test("with the signal server down, a restarted master rejoins from its peer book, and a new one that knows one member joins all", arguments: ["grpc", "tcp"])
    func joinWithoutSignalServer(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .signal)
        // Let the peer books reach the disk (new peers are saved within a second).
        try await Task.sleep(for: .milliseconds(1_500))
        cluster.signal("signal", SIGKILL)

        cluster.signal("m2", SIGKILL)
        try cluster.startMaster("m2")
        try await cluster.waitForFullMesh(nodes)
        let m2 = try await cluster.status("m2")
        #expect(m2.local.discovery.health != "healthy")
        #expect(m2.peers.allSatisfy { $0.sources.contains("peer_book") || $0.sources.contains("inbound") }, "\(m2.peers.map(\.sources))")

        try cluster.startMaster("m4", discovery: .staticPeers(["m1"]))
        try await cluster.waitForFullMesh(nodes + ["m4"])
        let m4 = try await cluster.status("m4")
        #expect(m4.peers.contains { $0.sources.contains("peer_exchange") || $0.sources.contains("inbound") })
    }

    @Test("bad certificates are refused at the mesh's door; garbage and half-open connections leave a node unharmed", arguments: ["grpc", "tcp"])
    func badPeers(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let all = ["m1", "m2", "m3", "m4"]
        // m3 holds a certificate of another CA; m4 holds one issued to m2 (a stolen identity).
        try cluster.writeCertificates(node: "m3", foreignCA: try CertificateAuthority.makeCA(commonName: "someone else's CA"))
        try cluster.writeCertificates(node: "m4", certificateFor: "m2")
        for node in all { try cluster.startMaster(node, discovery: .staticPeers(all.filter { $0 != node })) }
        try await cluster.waitForFullMesh(["m1", "m2"])
        try await Task.sleep(for: .seconds(2))
        let linkedM1 = await cluster.connectedPeers("m1")
        #expect(linkedM1 == ["m2"])
        let linkedM2 = await cluster.connectedPeers("m2")
        #expect(linkedM2 == ["m1"])
        let linkedM3 = await cluster.connectedPeers("m3")
        #expect(linkedM3.isEmpty)
        let linkedM4 = await cluster.connectedPeers("m4")
        #expect(linkedM4.isEmpty)
        let log = cluster.log("m1")
        #expect(log.contains("peer certificate refused: unable to get local issuer certificate"), "the foreign CA refusal is logged with OpenSSL's reason")
        #expect(log.contains("the peer says it is m4 but its certificate was issued to m2"), "a Hello that lies about its certificate is refused")
        #expect(log.contains("the certificate of 127.0.0.1:\(try cluster.ports(of: "m4").p2p) is for node 'm2', not the expected 'm4'"), "dialling m4 finds m2's certificate")

        // The refused master cannot reach anyone: a command from it is unreachable at once, not a timeout.
        let stranded = try await cluster.post("m3", "/api/commands", ["target": "m1", "action": "ping"])
        #expect(stranded.status == 503 && (stranded.body["error"] as? [String: Any])?["code"] as? String == "unreachable", "\(stranded.body)")

        let linkBefore = try await cluster.status("m1").peers.first { $0.nodeID == "m2" }?.connectedSince
        let port = try cluster.ports(of: "m1").p2p
        var silent: [Int32] = []
        for index in 0..<6 {
            let fd = try rawConnect(port: port)
            switch index % 3 {
            case 0: _ = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".withCString { write(fd, $0, strlen($0)) }
            case 1:
                let junk = (0..<4_096).map { _ in UInt8.random(in: 0...255) }
                _ = junk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            default: break  // half-open: connects and says nothing
            }
            silent.append(fd)
        }
        try await Task.sleep(for: .seconds(1))
        for fd in silent { close(fd) }
        let after = try await cluster.status("m1").peers.first { $0.nodeID == "m2" }
        #expect(after?.state == .connected && after?.connectedSince == linkBefore, "the good link is untouched")
        #expect(cluster.isRunning("m1"))
    }

    @Test("a frozen master (SIGSTOP) is dropped within mesh.peer_timeout, and rejoins when it thaws", arguments: ["grpc", "tcp"])
    func frozenPeer(transport: String) async throws {
        let cluster = try ClusterHarness(transport: transport)
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .staticPeers([]))
        let pid = try #require(cluster.process("m2")).processIdentifier
        kill(pid, SIGSTOP)
        let frozenAt = ContinuousClock.now
        try await eventually("m1 and m3 to drop the frozen m2", timeout: .seconds(8)) {
            let m1 = await cluster.connectedPeers("m1")
            let m3 = await cluster.connectedPeers("m3")
            return !m1.contains("m2") && !m3.contains("m2")
        }
        // mesh.peer_timeout is 3s; the transports' own dead-peer timeout is 10s here, so this is the mesh noticing.
        #expect(ContinuousClock.now - frozenAt < .seconds(5))
        let linked = await cluster.connectedPeers("m1")
        #expect(linked == ["m3"], "the others' link is untouched")
        kill(pid, SIGCONT)
        try await cluster.waitForFullMesh(nodes)
    }

    @Test("shipped timings: a frozen master (SIGSTOP) is marked down by every other within 5 s; a master starved by CPU hogs never is, nor does it accuse")
    func failureDetectionDefaults() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        cluster.shippedTimings = true
        let nodes = ["m1", "m2", "m3", "m4"]
        try await cluster.startMesh(nodes, discovery: .staticPeers([]))
        // m4 shares one CPU with four busy loops; the others keep the other CPU (when there is one).
        let cpus = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let starved = cpus > 1 ? "1" : "0"
        for node in ["m1", "m2", "m3"] { try taskset(cluster.process(node), cpu: "0") }
        try taskset(cluster.process("m4"), cpu: starved)
        var hogs: [Process] = []
        // SIGKILL: a busy `sh` loop never reaches a point where it would act on SIGTERM.
        defer { for hog in hogs { kill(hog.processIdentifier, SIGKILL); hog.waitUntilExit() } }
        for _ in 0..<4 {
            let hog = Process()
            hog.executableURL = URL(filePath: "/usr/bin/taskset")
            hog.arguments = ["-c", starved, "/bin/sh", "-c", "while :; do :; done"]
            // Not the test's own pipes: `swift test` waits for every holder of its output to close it.
            hog.standardOutput = FileHandle.nullDevice
            hog.standardError = FileHandle.nullDevice
            try hog.run()
            hogs.append(hog)
        }
        let since = try await Dictionary(uniqueKeysWithValues: nodes.asyncMap { node in
            (node, try await cluster.status(node).peers.filter { $0.state == .connected }.map { "\($0.nodeID)@\($0.connectedSince ?? "")" }.sorted())
        })
        try await Task.sleep(for: .seconds(1))
        let pid = try #require(cluster.process("m2")).processIdentifier
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        let frozenAt = ContinuousClock.now
        var noticed: [String: Duration] = [:]
        while noticed.count < 3 && ContinuousClock.now - frozenAt < .seconds(10) {
            for node in ["m1", "m3", "m4"] where noticed[node] == nil {
                if await !cluster.connectedPeers(node).contains("m2") { noticed[node] = ContinuousClock.now - frozenAt }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        print("shipped timings: the frozen m2 was marked down after \(noticed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        for node in ["m1", "m3", "m4"] {
            let took = try #require(noticed[node], "\(node) never marked the frozen m2 down")
            #expect(took < .seconds(5), "\(node) took \(took) to notice the frozen m2")
        }
        // Keep the hogs on for a while longer: the starved m4 keeps its links, and nobody drops it.
        try await Task.sleep(for: .seconds(6))
        for node in ["m1", "m3", "m4"] {
            let now = try await cluster.status(node).peers.filter { $0.state == .connected && $0.nodeID != "m2" }.map { "\($0.nodeID)@\($0.connectedSince ?? "")" }.sorted()
            let before = since[node]!.filter { !$0.hasPrefix("m2@") }
            #expect(now == before, "\(node)'s links to the live masters changed while m4 was starved: \(before) → \(now)")
        }
    }

    @Test("SIGTERM: a master says goodbye to its peers, leaves the signal server at once, and exits 0")
    func gracefulStop() async throws {
        let cluster = try ClusterHarness(transport: "grpc")
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .signal)
        let m3 = try #require(cluster.process("m3"))
        cluster.signal("m3", SIGTERM)
        #expect(m3.terminationStatus == 0)
        let gone = try await cluster.status("m1").peers.first { $0.nodeID == "m3" }
        #expect(gone?.state != .connected)
        #expect(gone?.lastError?.contains("the peer said goodbye: m3 is shutting down") == true, "\(gone?.lastError ?? "")")
        let list = try await cluster.signalList()
        #expect(!list.contains("m3"), "deregistered, not left to expire")
    }

    @Test("max_peers = 2: five masters that each know only m1 find the rest and settle into a ring")
    func partialMesh() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3", "m4", "m5"]
        for node in nodes {
            try cluster.startMaster(node, discovery: .staticPeers(node == "m1" ? [] : ["m1"]), maxPeers: 2)
        }
        let members = Set(nodes.map { NodeID($0)! })
        try await eventually("every node to hold exactly its ring neighbours", timeout: .seconds(25)) {
            for node in nodes {
                let expected = Set(MeshTopology.preferredPeers(of: NodeID(node)!, among: members, maxPeers: 2).map(\.rawValue))
                if await cluster.connectedPeers(node) != expected { return false }
            }
            return true
        } describe: {
            var lines: [String] = []
            for node in nodes { lines.append("\(node): \(await cluster.connectedPeers(node).sorted())") }
            return lines.joined(separator: "; ")
        }
        for node in nodes {
            let known = try await cluster.status(node).peers.count
            #expect(known == 4, "\(node) knows every member")
        }
    }
}

/// A plain TCP connection to 127.0.0.1:`port`.
func rawConnect(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard result == 0 else { close(fd); throw HarnessError("connect to \(port) failed") }
    return fd
}

/// Pins a running process to `cpu` (a `taskset` CPU list).
func taskset(_ process: Process?, cpu: String) throws {
    guard let process else { throw HarnessError("no such process") }
    let pin = Process()
    pin.executableURL = URL(filePath: "/usr/bin/taskset")
    pin.arguments = ["-a", "-p", "-c", cpu, "\(process.processIdentifier)"]
    pin.standardOutput = FileHandle.nullDevice
    try pin.run()
    pin.waitUntilExit()
    guard pin.terminationStatus == 0 else { throw HarnessError("taskset -c \(cpu) \(process.processIdentifier) failed") }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
