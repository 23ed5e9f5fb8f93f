import Foundation
public import AgentFlowCore
public import AgentFlowMesh
public import AgentFlowProto
import Logging

/// Control commands over the mesh, as I/O-free state that `MeshState` owns:
/// routing, relay de-duplication, the at-most-once memory of the target, and
/// the commands this node is waiting on.
///
/// Routing, per hop: the first hop of a shortest path in the link graph;
/// when the graph knows no path, every other link (receivers drop an id they
/// have seen). A command to a node the graph cannot reach is `unreachable` at
/// once. The hop limit bounds the path; a relay that cannot go on answers
/// `unreachable` to the origin.
///
/// The target refuses actions its config does not allow, runs each command
/// id once (a retried or re-routed id gets the first result), honours
/// idempotency keys, and writes an audit line for every command it handles.
/// Running an action is I/O: the state asks for it with a `Run` effect and
/// hears the result through `finished`. `ping` is the exception: the protocol
/// answers it itself ("pong from <id>"), once it is allowed.
public struct CommandProtocol: MeshProtocol {
    public let localID: NodeID
    public let allowed: Set<String>
    public let knownActions: Set<String>
    public let hopLimit: UInt32
    /// Ids of commands, receipts and results seen here, with when (relay de-duplication).
    var seen: [String: MeshInstant] = [:]
    /// Results of commands run here, by command id and by "origin/idempotency key".
    var results: [String: (CommandRouter.Result, MeshInstant)] = [:]
    /// Commands running here: the command, and its idempotency key id.
    var running: [String: (Agentflow_Mesh_V1_Command, String?)] = [:]
    /// Commands issued here and not yet answered, with when to forget them.
    var waiting: [String: MeshInstant] = [:]
    /// How long the memories last.
    static let memory: Duration = .seconds(600)
    /// The newest commands issued or run here, for the dashboard.
    public private(set) var journal = CommandJournal()

    /// Effect: run `action` here and report with `finished`.
    public struct Run: Sendable {
        public var commandID: String
        public var action: String
        public var args: [String: String]
    }

    /// Effect: a command issued here got its receipt (the target has it).
    public struct Receipt: Sendable {
        public var commandID: String
    }

    /// Effect: a command issued here got its result.
    public struct Answer: Sendable {
        public var commandID: String
        public var result: CommandRouter.Result
    }

    public init(localID: NodeID, allowed: Set<String>, knownActions: Set<String>, hopLimit: UInt32) {
        self.localID = localID
        self.allowed = allowed
        self.knownActions = knownActions
        self.hopLimit = hopLimit
    }

    public static func handles(_ body: Envelope.OneOf_Body) -> Bool {
        switch body {
        case .command, .commandReceipt, .commandResult: true
        default: false
        }
    }

    // MARK: Issuing

    /// Why a command to `target` cannot be sent, or nil when it went out.
    public enum Issued: Sendable, Equatable {
        case sent
        /// Run here: the result comes as an `Answer` effect.
        case local
        case unreachable(String)
    }

    /// Sends a command toward `target` (or runs it here when it is this node).
    public mutating func issue(commandID: String, target: NodeID, action: String, args: [String: String], idempotencyKey: String?,
                               timeout: Duration, context: inout MeshContext) -> Issued {
        let now = context.now
        var command = Agentflow_Mesh_V1_Command()
        command.commandID = commandID
        command.origin = localID.rawValue
        command.target = target.rawValue
        command.hopLimit = hopLimit
        command.action = action
        command.args = args
        command.idempotencyKey = idempotencyKey ?? ""
        command.deadlineUnixMicros = now.wallMicros + timeout.inMicroseconds
        journal.add(command, role: .issued, stage: .sent, atMicros: now.wallMicros)
        if target == localID {
            waiting[commandID] = now.instant + timeout
            start(command, context: &context)
            return .local
        }
        let topology = context.topology
        let why: String
        if topology.links.isEmpty {
            why = "\(localID) has no live link to any master"
        } else if !topology.isReachable(target) {
            why = "no path from \(localID) to \(target) in the link graph: no live master reports a link to it"
        } else {
            var envelope = Envelope()
            envelope.command = command
            seen[commandID] = now.instant
            waiting[commandID] = now.instant + timeout
            if route(envelope, to: target, from: nil, context: &context) { return .sent }
            waiting.removeValue(forKey: commandID)
            why = "no link to \(target) or to any peer that could relay"
        }
        journal.ended(commandID, stage: .unreachable, message: why, atMicros: now.wallMicros)
        return .unreachable(why)
    }

    /// The caller stopped waiting (timed out or answered).
    public mutating func forget(_ commandID: String, context: inout MeshContext) {
        if waiting.removeValue(forKey: commandID) != nil {
            journal.ended(commandID, stage: .noAnswer, message: "no result before the caller's timeout", atMicros: context.now.wallMicros)
        }
    }

    // MARK: Receiving

    public mutating func receive(_ envelope: Envelope, from peer: NodeID, context: inout MeshContext) {
        switch envelope.body {
        case .command(let command):
            receive(command, from: peer, context: &context)
        case .commandReceipt(let receipt):
            guard firstSighting("receipt/\(receipt.commandID)", context.now.instant) else { return }
            if receipt.target == localID.rawValue {
                if waiting[receipt.commandID] != nil {
                    journal.receipt(receipt.commandID, atMicros: context.now.wallMicros)
                    context.effect(Receipt(commandID: receipt.commandID))
                }
            } else if let destination = NodeID(receipt.target), receipt.hopLimit > 1 {
                var forwarded = Envelope()
                forwarded.commandReceipt = receipt
                forwarded.commandReceipt.hopLimit = receipt.hopLimit - 1
                _ = route(forwarded, to: destination, from: peer, context: &context)
            }
        case .commandResult(let result):
            guard firstSighting("result/\(result.commandID)", context.now.instant) else { return }
            if result.target == localID.rawValue {
                guard waiting.removeValue(forKey: result.commandID) != nil else { return }
                let answer = CommandRouter.Result(status: result.status, exitCode: result.exitCode, output: result.outputText, message: result.message)
                journal.answered(result.commandID, role: .issued, answer, atMicros: context.now.wallMicros)
                context.effect(Answer(commandID: result.commandID, result: answer))
            } else if let destination = NodeID(result.target), result.hopLimit > 1 {
                var forwarded = Envelope()
                forwarded.commandResult = result
                forwarded.commandResult.hopLimit = result.hopLimit - 1
                _ = route(forwarded, to: destination, from: peer, context: &context)
            }
        default:
            break
        }
    }

    mutating func receive(_ command: Agentflow_Mesh_V1_Command, from peer: NodeID, context: inout MeshContext) {
        guard let target = NodeID(command.target), NodeID(command.origin) != nil, !command.commandID.isEmpty, command.commandID.utf8.count <= 64 else {
            context.log(.warning, "dropped a malformed command from \(peer)")
            return
        }
        if target != localID {
            guard firstSighting(command.commandID, context.now.instant) else { return }
            guard command.hopLimit > 1 else {
                reply(to: command, CommandRouter.Result(status: .unreachable, message: "the hop limit ran out at \(localID) before reaching \(target)"), context: &context)
                return
            }
            var forwarded = Envelope()
            forwarded.command = command
            forwarded.command.hopLimit -= 1
            if !route(forwarded, to: target, from: peer, context: &context) {
                reply(to: command, CommandRouter.Result(status: .unreachable, message: "\(localID) has no route to \(target)"), context: &context)
            }
            return
        }
        // Addressed to this node: a retried id gets its first result again.
        if let done = results[command.commandID]?.0 {
            sendReceipt(for: command, context: &context)
            reply(to: command, done, context: &context)
            return
        }
        guard firstSighting(command.commandID, context.now.instant) else { return }  // again by another path while it runs
        sendReceipt(for: command, context: &context)
        start(command, context: &context)
    }

    /// Runs a command here: allow-list and idempotency are decided now; an allowed action is run by the application.
    mutating func start(_ command: Agentflow_Mesh_V1_Command, context: inout MeshContext) {
        journal.add(command, role: .ran, stage: .running, atMicros: context.now.wallMicros)
        let keyID = command.idempotencyKey.isEmpty ? nil : "\(command.origin)/\(command.idempotencyKey)"
        if let keyID, let earlier = results[keyID]?.0 {
            finish(command, keyID: keyID, earlier, context: &context)
        } else if !knownActions.contains(command.action) {
            finish(command, keyID: keyID, CommandRouter.Result(status: .unknownAction, message: "\(localID) has no action \"\(command.action.prefix(64))\"; known: \(knownActions.sorted().joined(separator: ", "))"), context: &context)
        } else if !allowed.contains(command.action) {
            finish(command, keyID: keyID, CommandRouter.Result(status: .refused, message: "\(localID) does not allow \"\(command.action)\" (commands.allow: \(allowed.sorted().joined(separator: ", ")))"), context: &context)
        } else if command.action == "ping" {
            // Answered here, in the same step: it proves the path and the target's mesh, and needs no I/O.
            finish(command, keyID: keyID, CommandRouter.Result(status: .ok, output: "pong from \(localID)"), context: &context)
        } else {
            running[command.commandID] = (command, keyID)
            context.effect(Run(commandID: command.commandID, action: command.action, args: command.args))
        }
    }

    /// The application ran a command's action (`Run`): record, audit, answer.
    public mutating func finished(_ commandID: String, result: CommandRouter.Result, context: inout MeshContext) {
        guard let (command, keyID) = running.removeValue(forKey: commandID) else { return }
        finish(command, keyID: keyID, result, context: &context)
    }

    mutating func finish(_ command: Agentflow_Mesh_V1_Command, keyID: String?, _ result: CommandRouter.Result, context: inout MeshContext) {
        let now = context.now.instant
        results[command.commandID] = (result, now)
        if let keyID { results[keyID] = (result, now) }
        prune(now)
        journal.answered(command.commandID, role: .ran, result, atMicros: context.now.wallMicros)
        let argsText = command.args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.prefix(64))" }.joined(separator: " ")
        context.log(.notice, "audit: command \(command.commandID) from \(command.origin): \(command.action)\(argsText.isEmpty ? "" : " " + argsText) → \(CommandRouter.name(result.status))\(result.message.isEmpty ? "" : ": " + result.message)")
        if command.origin == localID.rawValue {
            if waiting.removeValue(forKey: command.commandID) != nil {
                journal.answered(command.commandID, role: .issued, result, atMicros: context.now.wallMicros)
                context.effect(Answer(commandID: command.commandID, result: result))
            }
            return
        }
        reply(to: command, result, context: &context)
    }

    mutating func sendReceipt(for command: Agentflow_Mesh_V1_Command, context: inout MeshContext) {
        guard let origin = NodeID(command.origin) else { return }
        var envelope = Envelope()
        envelope.commandReceipt.commandID = command.commandID
        envelope.commandReceipt.origin = localID.rawValue
        envelope.commandReceipt.target = command.origin
        envelope.commandReceipt.hopLimit = hopLimit
        _ = route(envelope, to: origin, from: nil, context: &context)
    }

    mutating func reply(to command: Agentflow_Mesh_V1_Command, _ result: CommandRouter.Result, context: inout MeshContext) {
        guard let origin = NodeID(command.origin), origin != localID else { return }
        var answer = Agentflow_Mesh_V1_CommandResult()
        answer.commandID = command.commandID
        answer.origin = localID.rawValue
        answer.target = command.origin
        answer.hopLimit = hopLimit
        answer.status = result.status
        answer.exitCode = result.exitCode
        answer.output = Data(result.output.utf8.prefix(64 * 1_024))
        answer.message = String(result.message.prefix(4 * 1_024))
        var envelope = Envelope()
        envelope.commandResult = answer
        _ = route(envelope, to: origin, from: nil, context: &context)
    }

    /// Sends toward `destination` along the link graph; false when there is no link at all to use.
    func route(_ envelope: Envelope, to destination: NodeID, from: NodeID?, context: inout MeshContext) -> Bool {
        if let hop = context.topology.nextHop(to: destination), hop != from, context.send(envelope, to: hop) { return true }
        // No path known (the graph is still forming): ask every other neighbour (they drop ids they have seen).
        var sent = false
        for peer in context.topology.linkedPeers where peer != from {
            if context.send(envelope, to: peer) { sent = true }
        }
        return sent
    }

    mutating func firstSighting(_ id: String, _ now: MeshInstant) -> Bool {
        if seen[id] != nil { return false }
        seen[id] = now
        prune(now)
        return true
    }

    mutating func prune(_ now: MeshInstant) {
        guard seen.count > 50_000 || results.count > 10_000 else { return }
        seen = seen.filter { now - $0.value < Self.memory }
        results = results.filter { now - $0.value.1 < Self.memory }
    }

    public mutating func tick(context: inout MeshContext) {
        let now = context.now.instant
        waiting = waiting.filter { $0.value > now }
    }
}
