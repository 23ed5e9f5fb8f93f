public import AgentFlowCore
import AgentFlowMesh
public import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import Logging
import Synchronization

/// What a master does when a command reaches it: runs an allowed action.
public protocol CommandActions: Sendable {
    /// Every action this node knows (allowed or not); others are `unknown_action`.
    var knownActions: Set<String> { get }
    func perform(_ action: String, args: [String: String]) async -> CommandRouter.Result
}

/// Routes control commands to any master and their receipts and results back.
///
/// Routing, per hop: the direct link to the destination; else a neighbour
/// that reports a direct link to it; else the neighbour its events arrive
/// through; else every other link (receivers drop a command id they have
/// seen). The hop limit bounds the path; a relay that cannot go on answers
/// `unreachable` to the origin.
///
/// The target refuses actions its config does not allow, runs each command
/// id once (a retried id gets the first result), honours idempotency keys,
/// and writes an audit line for every command it handles.
public final class CommandRouter: Sendable {
    public struct Result: Sendable, Hashable {
        public var status: Agentflow_Mesh_V1_CommandStatus
        public var exitCode: Int32
        public var output: String
        public var message: String

        public init(status: Agentflow_Mesh_V1_CommandStatus, exitCode: Int32 = 0, output: String = "", message: String = "") {
            self.status = status
            self.exitCode = exitCode
            self.output = output
            self.message = message
        }
    }

    /// How a command issued here ended.
    public enum Outcome: Sendable {
        /// The target answered (ok, failed, refused, unknown action, or a relay's unreachable).
        case answered(Result, target: NodeID, receiptAfter: Duration?, total: Duration)
        /// No route to the target at all.
        case unreachable(String)
        /// No answer in time; `receipt` tells whether the target said it got the command.
        case timedOut(receipt: Bool, after: Duration)
    }

    let node: ClusterNode
    let localID: NodeID
    let allowed: Set<String>
    let actions: any CommandActions
    let logger: Logger
    let hopLimit: UInt32

    private final class Pending: Sendable {
        struct State {
            var receiptAt: ContinuousClock.Instant?
            var continuation: CheckedContinuation<Agentflow_Mesh_V1_CommandResult?, Never>?
            var result: Agentflow_Mesh_V1_CommandResult?
        }
        let state = Mutex(State())
    }

    private struct Memory {
        var pending: [String: Pending] = [:]
        /// Ids of commands, receipts and results seen here (relay de-duplication), with when.
        var seen: [String: ContinuousClock.Instant] = [:]
        /// Results of commands this node ran, by command id and by "origin/idempotency key".
        var results: [String: (Result, ContinuousClock.Instant)] = [:]
    }

    private let memory = Mutex(Memory())

    public init(node: ClusterNode, allowed: Set<String>, actions: any CommandActions, logger: Logger, hopLimit: UInt32 = 16) {
        self.node = node
        self.localID = node.localID
        self.allowed = allowed
        self.actions = actions
        self.logger = logger
        self.hopLimit = hopLimit
        node.commands.withLock { $0 = self }
    }

    // MARK: Issuing

    /// Runs `action` on `target` and waits for its result (at most `timeout`).
    public func execute(target: NodeID, action: String, args: [String: String], idempotencyKey: String? = nil, timeout: Duration) async -> Outcome {
        let clock = ContinuousClock()
        let start = clock.now
        if target == localID {
            let result = await run(commandID: UUID().uuidString.lowercased(), origin: localID.rawValue, action: action, args: args, idempotencyKey: idempotencyKey)
            return .answered(result, target: target, receiptAfter: .zero, total: clock.now - start)
        }
        if let reason = node.unreachableReason(target) { return .unreachable(reason) }
        var command = Agentflow_Mesh_V1_Command()
        command.commandID = UUID().uuidString.lowercased()
        command.origin = localID.rawValue
        command.target = target.rawValue
        command.hopLimit = hopLimit
        command.action = action
        command.args = args
        command.idempotencyKey = idempotencyKey ?? ""
        command.deadlineUnixMicros = unixMicros() + timeout.inMicroseconds
        var envelope = Envelope()
        envelope.command = command

        let pending = Pending()
        memory.withLock {
            $0.pending[command.commandID] = pending
            $0.seen[command.commandID] = clock.now
        }
        defer { _ = memory.withLock { $0.pending.removeValue(forKey: command.commandID) } }
        guard route(envelope, to: target, from: nil) else {
            return .unreachable("no link to \(target) or to any peer that could relay")
        }
        let result: Agentflow_Mesh_V1_CommandResult? = await withTaskGroup(of: Agentflow_Mesh_V1_CommandResult?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let ready = pending.state.withLock { state -> Agentflow_Mesh_V1_CommandResult?? in
                        if let result = state.result { return .some(result) }
                        state.continuation = continuation
                        return .none
                    }
                    if let ready { continuation.resume(returning: ready) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            // Release the waiter if the timer won.
            pending.state.withLock { state in
                state.continuation?.resume(returning: nil)
                state.continuation = nil
            }
            group.cancelAll()
            return first
        }
        let receiptAt = pending.state.withLock { $0.receiptAt }
        guard let result else { return .timedOut(receipt: receiptAt != nil, after: clock.now - start) }
        return .answered(
            Result(status: result.status, exitCode: result.exitCode, output: result.output, message: result.message),
            target: target, receiptAfter: receiptAt.map { $0 - start }, total: clock.now - start)
    }

    // MARK: Receiving

    func received(_ envelope: Envelope, from link: PeerLink) async {
        switch envelope.body {
        case .command(let command):
            await receive(command, from: link)
        case .commandReceipt(let receipt):
            guard firstSighting("receipt/\(receipt.commandID)") else { return }
            if receipt.target == localID.rawValue {
                memory.withLock { $0.pending[receipt.commandID] }?.state.withLock { $0.receiptAt = .now }
            } else {
                relay(receipt.target, hopLimit: receipt.hopLimit, from: link.peerID) { hops in
                    var envelope = Envelope()
                    envelope.commandReceipt = receipt
                    envelope.commandReceipt.hopLimit = hops
                    return envelope
                }
            }
        case .commandResult(let result):
            guard firstSighting("result/\(result.commandID)") else { return }
            if result.target == localID.rawValue {
                guard let pending = memory.withLock({ $0.pending[result.commandID] }) else { return }
                let continuation = pending.state.withLock { state -> CheckedContinuation<Agentflow_Mesh_V1_CommandResult?, Never>? in
                    state.result = result
                    defer { state.continuation = nil }
                    return state.continuation
                }
                continuation?.resume(returning: result)
            } else {
                relay(result.target, hopLimit: result.hopLimit, from: link.peerID) { hops in
                    var envelope = Envelope()
                    envelope.commandResult = result
                    envelope.commandResult.hopLimit = hops
                    return envelope
                }
            }
        default:
            break
        }
    }

    private func receive(_ command: Agentflow_Mesh_V1_Command, from link: PeerLink) async {
        guard let origin = NodeID(command.origin), let target = NodeID(command.target), !command.commandID.isEmpty, command.commandID.utf8.count <= 64 else {
            logger.warning("dropped a malformed command from \(link.peerID)")
            return
        }
        if target != localID {
            guard firstSighting(command.commandID) else { return }
            guard command.hopLimit > 1 else {
                reply(to: command, Result(status: .unreachable, message: "the hop limit ran out at \(localID) before reaching \(target)"))
                return
            }
            var forwarded = command
            forwarded.hopLimit -= 1
            var out = Envelope()
            out.command = forwarded
            if !route(out, to: target, from: link.peerID) {
                reply(to: command, Result(status: .unreachable, message: "\(localID) has no route to \(target)"))
            }
            return
        }
        // Addressed to this node: a retried id gets its first result again.
        if let done = memory.withLock({ $0.results[command.commandID]?.0 }) {
            sendReceipt(for: command)
            reply(to: command, done)
            return
        }
        guard firstSighting(command.commandID) else { return }  // arriving again by another path while it runs
        sendReceipt(for: command)
        let result = await run(commandID: command.commandID, origin: origin.rawValue, action: command.action, args: command.args,
                               idempotencyKey: command.idempotencyKey.isEmpty ? nil : command.idempotencyKey)
        reply(to: command, result)
    }

    /// Runs an action here: allow-list, idempotency, audit.
    private func run(commandID: String, origin: String, action: String, args: [String: String], idempotencyKey: String?) async -> Result {
        let keyID = idempotencyKey.map { "\(origin)/\($0)" }
        let result: Result
        if let keyID, let earlier = memory.withLock({ $0.results[keyID]?.0 }) {
            result = earlier
        } else if !actions.knownActions.contains(action) {
            result = Result(status: .unknownAction, message: "\(localID) has no action \"\(action.prefix(64))\"; known: \(actions.knownActions.sorted().joined(separator: ", "))")
        } else if !allowed.contains(action) {
            result = Result(status: .refused, message: "\(localID) does not allow \"\(action)\" (commands.allow: \(allowed.sorted().joined(separator: ", ")))")
        } else {
            result = await actions.perform(action, args: args)
        }
        memory.withLock { memory in
            let now = ContinuousClock.now
            memory.results[commandID] = (result, now)
            if let keyID { memory.results[keyID] = (result, now) }
            prune(&memory, now: now)
        }
        let argsText = args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.prefix(64))" }.joined(separator: " ")
        logger.notice("audit: command \(commandID) from \(origin): \(action)\(argsText.isEmpty ? "" : " " + argsText) → \(Self.name(result.status))\(result.message.isEmpty ? "" : ": " + result.message)")
        return result
    }

    private func sendReceipt(for command: Agentflow_Mesh_V1_Command) {
        guard let origin = NodeID(command.origin) else { return }
        var receipt = Agentflow_Mesh_V1_CommandReceipt()
        receipt.commandID = command.commandID
        receipt.origin = localID.rawValue
        receipt.target = command.origin
        receipt.hopLimit = hopLimit
        var envelope = Envelope()
        envelope.commandReceipt = receipt
        _ = route(envelope, to: origin, from: nil)
    }

    private func reply(to command: Agentflow_Mesh_V1_Command, _ result: Result) {
        guard let origin = NodeID(command.origin) else { return }
        var answer = Agentflow_Mesh_V1_CommandResult()
        answer.commandID = command.commandID
        answer.origin = localID.rawValue
        answer.target = command.origin
        answer.hopLimit = hopLimit
        answer.status = result.status
        answer.exitCode = result.exitCode
        answer.output = String(result.output.prefix(64 * 1_024))
        answer.message = String(result.message.prefix(4 * 1_024))
        var envelope = Envelope()
        envelope.commandResult = answer
        if origin == localID {
            // A relay answering its own command cannot happen; a target answering itself is handled in execute.
            return
        }
        _ = route(envelope, to: origin, from: nil)
    }

    /// Passes a receipt or result on toward `target` with one hop fewer (dropped at the limit).
    private func relay(_ target: String, hopLimit: UInt32, from: NodeID, _ envelope: (UInt32) -> Envelope) {
        guard let destination = NodeID(target), hopLimit > 1 else { return }
        _ = route(envelope(hopLimit - 1), to: destination, from: from)
    }

    /// Sends toward `destination`; false when there is no link at all to use.
    private func route(_ envelope: Envelope, to destination: NodeID, from: NodeID?) -> Bool {
        if let hop = node.nextHop(to: destination, excluding: from), hop.peerID != from {
            if hop.trySend(envelope) { return true }
        }
        // Nobody known to reach it: ask every other neighbour (they drop ids they have seen).
        var sent = false
        for link in node.liveLinks where link.peerID != from {
            if link.trySend(envelope) { sent = true }
        }
        return sent
    }

    private func firstSighting(_ id: String) -> Bool {
        memory.withLock { memory in
            let now = ContinuousClock.now
            if memory.seen[id] != nil { return false }
            memory.seen[id] = now
            prune(&memory, now: now)
            return true
        }
    }

    private func prune(_ memory: inout Memory, now: ContinuousClock.Instant) {
        guard memory.seen.count > 50_000 || memory.results.count > 10_000 else { return }
        memory.seen = memory.seen.filter { now - $0.value < .seconds(600) }
        memory.results = memory.results.filter { now - $0.value.1 < .seconds(600) }
    }

    static func name(_ status: Agentflow_Mesh_V1_CommandStatus) -> String {
        switch status {
        case .ok: "ok"
        case .failed: "failed"
        case .refused: "refused"
        case .unknownAction: "unknown_action"
        case .unreachable: "unreachable"
        case .timeout: "timeout"
        default: "unspecified"
        }
    }
}
