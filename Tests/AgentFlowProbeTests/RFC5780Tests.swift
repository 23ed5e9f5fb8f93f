import AgentFlowCore
import AgentFlowProbes
import AgentFlowSTUN
import AgentFlowTesting
import Foundation
import NIOCore
import Synchronization
import Testing

/// Our RFC 5780 responder and client, against each other and against coturn, on 127.0.0.1 and 127.0.0.2.
@Suite("RFC 5780 behaviour discovery", .serialized)
struct RFC5780Tests {
    /// A signal server whose STUN responder has an alternate address.
    static func signalWithAlternate() async throws -> (SignalUnderTest, HostPort) {
        let port = try freePort(on: ["127.0.0.1", "127.0.0.2"])
        var alternate = try freePort(on: ["127.0.0.1", "127.0.0.2"])
        while alternate == port { alternate = try freePort(on: ["127.0.0.1", "127.0.0.2"]) }
        let signal = try await SignalUnderTest.start("stun:\n  listen: 127.0.0.1:\(port)\n  alternate: 127.0.0.2:\(alternate)\n")
        return (signal, HostPort(host: "127.0.0.1", port: port))
    }

    @Test("our client against our responder: OTHER-ADDRESS, no NAT, endpoint-independent filtering")
    func ours() async throws {
        let (signal, stun) = try await Self.signalWithAlternate()
        defer { Task { await signal.stop() } }
        let result = try #require(try await NATBehaviorDiscovery(answerTimeout: .seconds(1)).discover(stun))
        #expect(result.observations.otherAddress?.ipDescription == "127.0.0.2")
        #expect(result.responseOrigin == STUNAddress(ip: "127.0.0.1", port: UInt16(stun.port)))
        #expect(result.behavior.behindNAT == false)
        #expect(result.behavior.filtering == .endpointIndependent, "answers from the alternate address and port arrived")
        #expect(result.behavior.verdict == .direct)
    }

    @Test("without an alternate the probe says behaviour discovery needs one")
    func noAlternate() async throws {
        let signal = try await SignalUnderTest.start("")
        defer { Task { await signal.stop() } }
        let probe = try STUNProbeModule.makeProbe(options: .init(servers: [try #require(signal.stun)]), context: ProbeContext(localNodeID: NodeID("p")!, timeout: .seconds(5)))
        let report = try await probe.run()
        #expect(report.outcome == .passed)
        #expect(report.fact("other_address") == "none")
        #expect(report.fact("mapping") == "endpoint-independent", "no NAT on loopback is endpoint-independent mapping")
        #expect(report.facts.contains { $0.name == "note" && $0.value.contains("stun.alternate") })
    }

    @Test("coturn's turnutils_natdiscovery classifies our responder like our own probe does")
    func coturnAgainstOurs() async throws {
        let (signal, stun) = try await Self.signalWithAlternate()
        defer { Task { await signal.stop() } }
        let output = try runTool("/usr/bin/turnutils_natdiscovery", ["-m", "-f", "-P", "-p", "\(stun.port)", "127.0.0.1"], timeout: 30)
        #expect(output.contains("NAT with Endpoint Independent Mapping"), "\(output)")
        #expect(output.contains("NAT with Endpoint Independent Filtering"), "\(output)")
        #expect(output.contains("Other addr: : 127.0.0.2"), "\(output)")
        // Without -P its requests are bare: it gets the 32-byte answer, which carries no OTHER-ADDRESS (no amplification).
        let bare = try runTool("/usr/bin/turnutils_natdiscovery", ["-m", "-p", "\(stun.port)", "127.0.0.1"], timeout: 30)
        #expect(!bare.contains("Other addr"), "\(bare)")
    }

    @Test("our probe against coturn's turnserver with two addresses gives coturn's own classification")
    func oursAgainstCoturn() async throws {
        let port = try freePort(on: ["127.0.0.1", "127.0.0.2"])
        let folder = FileManager.default.temporaryDirectory.appending(path: "coturn-\(UUID().uuidString.prefix(6))").path()
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        FileManager.default.createFile(atPath: folder + "/empty.conf", contents: Data())
        let turn = Process()
        turn.executableURL = URL(filePath: "/usr/bin/turnserver")
        turn.arguments = ["-c", folder + "/empty.conf", "--listening-ip", "127.0.0.1", "--listening-ip", "127.0.0.2", "--listening-port", "\(port)",
                          "--alt-listening-port", "\(port + 1)", "--stun-only", "--no-auth", "--no-tls", "--no-dtls", "--no-cli",
                          "--db", folder + "/turn.db", "--log-file", folder + "/turn.log", "--simple-log"]
        turn.standardOutput = FileHandle.nullDevice
        turn.standardError = FileHandle.nullDevice
        try turn.run()
        // turnserver takes its time over SIGTERM: kill it.
        defer { kill(turn.processIdentifier, SIGKILL); turn.waitUntilExit() }
        let server = HostPort(host: "127.0.0.1", port: port)
        var result: NATBehaviorDiscovery.Result?
        for _ in 0..<20 where result == nil {  // until turnserver is up
            result = try await NATBehaviorDiscovery(answerTimeout: .milliseconds(500)).discover(server)
        }
        let ours = try #require(result, "turnserver never answered")
        let theirs = try runTool("/usr/bin/turnutils_natdiscovery", ["-m", "-f", "-p", "\(port)", "127.0.0.1"], timeout: 30)
        #expect(ours.observations.otherAddress != nil, "coturn offers RFC 5780 with two listening IPs")
        #expect(theirs.contains("Endpoint Independent Mapping") == (ours.behavior.mapping == .endpointIndependent), "\(theirs)")
        #expect(theirs.contains("Endpoint Independent Filtering") == (ours.behavior.filtering == .endpointIndependent), "\(theirs)")
        #expect(ours.behavior.filtering == .endpointIndependent)
    }
}

/// The stun probe keeps the probe contract (ProbeConformance), against our responder and a silent socket.
@Suite("stun probe conformance")
struct STUNProbeConformanceTests {
    struct Bed: ProbeTestBed {
        func makeProbe(context: ProbeContext, answering: Bool) async throws -> any Probe {
            if answering {
                let signal = try await SignalUnderTest.start("")
                Self.keep.withLock { $0.append(signal) }
                return try STUNProbeModule.makeProbe(options: .init(servers: [try #require(signal.stun)]), context: context)
            }
            // A UDP port that takes datagrams and never answers.
            let silent = try await STUNSocket.bind(host: "127.0.0.1")
            Self.silent.withLock { $0.append(silent) }
            return try STUNProbeModule.makeProbe(options: .init(servers: [HostPort(host: "127.0.0.1", port: silent.localAddress.port!)], answerTimeout: .seconds(10)), context: context)
        }
        static let keep = Mutex<[SignalUnderTest]>([])
        static let silent = Mutex<[STUNSocket]>([])
    }

    @Test(arguments: ProbeConformance.checks)
    func conformance(_ check: ProbeConformance.Check) async throws {
        try await check.run(Bed())
    }
}

/// Runs a tool and returns its stdout and stderr (through a file: no pipe for
/// a child to hold open); kills it after `timeout` seconds.
func runTool(_ path: String, _ arguments: [String], timeout: Double) throws -> String {
    let output = FileManager.default.temporaryDirectory.appending(path: "tool-\(UUID().uuidString.prefix(8)).out")
    FileManager.default.createFile(atPath: output.path(), contents: nil)
    defer { try? FileManager.default.removeItem(at: output) }
    let handle = try FileHandle(forWritingTo: output)
    let process = Process()
    process.executableURL = URL(filePath: path)
    process.arguments = arguments
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    try handle.close()
    return (try? String(contentsOf: output, encoding: .utf8)) ?? ""
}
