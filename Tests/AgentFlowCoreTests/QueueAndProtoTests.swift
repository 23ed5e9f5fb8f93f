import AgentFlowCore
import AgentFlowProto
import Foundation
import SwiftProtobuf
import Testing

@Suite("Bounded queue")
struct BoundedAsyncQueueTests {
    @Test("delivers in order, then nil after finish")
    func order() async throws {
        let queue = BoundedAsyncQueue<Int>(capacity: 2)
        let producer = Task {
            for value in 0..<50 { try await queue.send(value) }
            queue.finish()
        }
        var values: [Int] = []
        while let value = try await queue.next() { values.append(value) }
        try await producer.value
        #expect(values == Array(0..<50))
    }

    @Test("finishing with an error delivers what was queued, then the error")
    func failure() async throws {
        struct Boom: Error {}
        let queue = BoundedAsyncQueue<Int>(capacity: 4)
        try await queue.send(1)
        queue.finish(throwing: Boom())
        #expect(try await queue.next() == 1)
        await #expect(throws: Boom.self) { _ = try await queue.next() }
        await #expect(throws: QueueClosedError.self) { try await queue.send(2) }
    }

    @Test("a waiting sender is released by finish, and by cancellation")
    func waitingSenders() async throws {
        let queue = BoundedAsyncQueue<Int>(capacity: 1)
        try await queue.send(0)
        let blocked = Task { try await queue.send(1) }
        let cancelled = Task { try await queue.send(2) }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        queue.finish()
        await #expect(throws: QueueClosedError.self) { try await blocked.value }
    }

    @Test("a waiting receiver is released by cancellation, and the queue still works after")
    func waitingReceiver() async throws {
        let queue = BoundedAsyncQueue<Int>(capacity: 4)
        let waiting = Task { try await queue.next() }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        try await queue.send(7)
        #expect(try await queue.next() == 7)
    }
}

@Suite("Wire contract")
struct WireContractTests {
    @Test("an envelope survives a binary round trip")
    func roundTrip() throws {
        var hello = Agentflow_Mesh_V1_Hello()
        hello.nodeID = "master-a"
        hello.softwareVersion = AgentFlowVersion.current
        hello.protocolVersion = AgentFlowVersion.protocolVersion
        hello.supportedTransports = ["grpc", "tcp"]
        hello.advertisedEndpoints = [.with { $0.transport = "grpc"; $0.host = "203.0.113.7"; $0.port = 50051 }]
        hello.labels = ["site": "home"]
        hello.incarnation = 42
        var envelope = Envelope()
        envelope.hello = hello
        let bytes: Data = try envelope.serializedBytes()
        let decoded = try Envelope(serializedBytes: bytes)
        #expect(decoded == envelope)
        #expect(decoded.hello.advertisedEndpoints.first?.port == 50051)
    }

    @Test("every event kind carries origin, sequence and timestamp")
    func eventHeaders() throws {
        let header = Agentflow_Mesh_V1_EventHeader.with {
            $0.origin = "master-a"; $0.incarnation = 3; $0.sequence = 17; $0.timestampUnixMicros = 1_700_000_000_000_000; $0.hopLimit = 4
        }
        let status = Agentflow_Mesh_V1_NodeStatusUpdate.with { $0.header = header; $0.cpuPercent = 12.5 }
        let log = Agentflow_Mesh_V1_TaskLog.with { $0.header = header; $0.task = "backup"; $0.text = "done"; $0.stream = .stdout }
        let alert = Agentflow_Mesh_V1_Alert.with { $0.header = header; $0.alertID = "cpu-high"; $0.severity = .critical; $0.active = true }
        let task = Agentflow_Mesh_V1_TaskStatus.with { $0.header = header; $0.task = "backup"; $0.state = .running }
        for envelope in [Envelope.with { $0.statusUpdate = status }, .with { $0.taskLog = log }, .with { $0.alert = alert }, .with { $0.taskStatus = task }] {
            let decoded = try Envelope(serializedBytes: try envelope.serializedBytes() as [UInt8])
            #expect(decoded == envelope)
        }
    }

    @Test("commands carry id, origin, target and hop limit")
    func commands() throws {
        let command = Agentflow_Mesh_V1_Command.with {
            $0.commandID = "c-1"; $0.origin = "a"; $0.target = "c"; $0.hopLimit = 3; $0.action = "task.restart"; $0.args = ["task": "backup"]
        }
        let result = Agentflow_Mesh_V1_CommandResult.with { $0.commandID = "c-1"; $0.origin = "c"; $0.target = "a"; $0.status = .refused }
        #expect(try Envelope(serializedBytes: try Envelope.with { $0.command = command }.serializedBytes() as [UInt8]).command == command)
        #expect(try Envelope(serializedBytes: try Envelope.with { $0.commandResult = result }.serializedBytes() as [UInt8]).commandResult.status == .refused)
    }

    @Test("a message from a newer peer with unknown fields and kinds still decodes")
    func forwardCompatible() throws {
        // Field 30 (reserved for future envelope kinds), wire type 2, 3 bytes "new".
        var bytes: [UInt8] = [0xF2, 0x01, 0x03] + Array("new".utf8)
        bytes += try Envelope.with { $0.ping = .with { $0.nonce = 9 } }.serializedBytes() as [UInt8]
        let decoded = try Envelope(serializedBytes: bytes)
        #expect(decoded.ping.nonce == 9)
    }

    @Test("garbage bytes are an error, not a crash")
    func garbage() {
        #expect(throws: (any Error).self) { _ = try Envelope(serializedBytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) }
    }
}
