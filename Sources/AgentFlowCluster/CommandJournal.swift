public import AgentFlowProto

/// The recent commands of one node, as its dashboard shows them: those issued
/// here (sent, receipt, result or no answer) and those run here (from which
/// origin, and with what result). It is I/O-free state inside
/// `CommandProtocol`, changed in the same step as the routing it describes.
///
/// Bounded: the newest `capacity` entries. Every change stamps the entry
/// with the journal's next `version`, so a reader that remembers the last
/// version it saw asks only for what changed since (`changed(since:)`).
public struct CommandJournal: Sendable {
    public struct Entry: Sendable, Hashable, Encodable {
        public enum Role: String, Sendable, Encodable {
            /// Sent from this node (by its API or its dashboard).
            case issued
            /// Addressed to this node and handled here.
            case ran
        }
        public enum Stage: String, Sendable, Encodable {
            /// Issued: on its way. Ran: its action is running.
            case sent, running
            /// Issued: the target confirmed it has the command.
            case receipt
            /// A result came (its `status` says which).
            case answered
            /// The caller stopped waiting before a result came.
            case noAnswer = "no_answer"
            /// No route: it never left this node.
            case unreachable
        }
        public var commandID: String
        public var role: Role
        public var origin: String
        public var target: String
        public var action: String
        public var stage: Stage
        /// `ok`, `failed`, `refused`, `unknown_action`, `unreachable` or `timeout`, once answered.
        public var status: String?
        public var exitCode: Int32?
        public var message: String?
        /// The first `outputLimit` bytes of the action's output.
        public var output: String?
        public var startedAtMicros: Int64
        public var receiptAtMicros: Int64?
        public var finishedAtMicros: Int64?
        public var version: UInt64

        enum CodingKeys: String, CodingKey {
            case commandID = "command_id", role, origin, target, action, stage, status, exitCode = "exit_code", message, output
            case startedAtMicros = "started_at_us", receiptAtMicros = "receipt_at_us", finishedAtMicros = "finished_at_us", version
        }
    }

    public let capacity: Int
    public static let outputLimit = 1_024
    /// The version of the newest change; 0 before any.
    public private(set) var version: UInt64 = 0
    /// Oldest first.
    public private(set) var entries: [Entry] = []

    public init(capacity: Int = 50) { self.capacity = max(1, capacity) }

    /// Entries that changed after `version`, oldest first.
    public func changed(since version: UInt64) -> [Entry] {
        guard version < self.version else { return [] }
        return entries.filter { $0.version > version }
    }

    mutating func add(_ command: Agentflow_Mesh_V1_Command, role: Entry.Role, stage: Entry.Stage, atMicros: Int64) {
        version += 1
        entries.append(Entry(commandID: command.commandID, role: role, origin: command.origin, target: command.target, action: String(command.action.prefix(64)),
                             stage: stage, startedAtMicros: atMicros, version: version))
        if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
    }

    mutating func receipt(_ commandID: String, atMicros: Int64) {
        update(commandID, .issued) { entry in
            guard entry.stage == .sent else { return false }
            entry.stage = .receipt
            entry.receiptAtMicros = atMicros
            return true
        }
    }

    mutating func answered(_ commandID: String, role: Entry.Role, _ result: CommandRouter.Result, atMicros: Int64) {
        update(commandID, role) { entry in
            guard entry.finishedAtMicros == nil else { return false }
            entry.stage = .answered
            entry.status = CommandRouter.name(result.status)
            entry.exitCode = result.exitCode
            entry.message = result.message.isEmpty ? nil : String(result.message.prefix(Self.outputLimit))
            entry.output = result.output.isEmpty ? nil : String(decoding: result.output.utf8.prefix(Self.outputLimit), as: UTF8.self)
            entry.finishedAtMicros = atMicros
            return true
        }
    }

    /// An issued command ended without a result: the caller stopped waiting, or it had no route.
    mutating func ended(_ commandID: String, stage: Entry.Stage, message: String? = nil, atMicros: Int64) {
        update(commandID, .issued) { entry in
            guard entry.finishedAtMicros == nil else { return false }
            entry.stage = stage
            entry.message = message
            entry.finishedAtMicros = atMicros
            return true
        }
    }

    private mutating func update(_ commandID: String, _ role: Entry.Role, _ change: (inout Entry) -> Bool) {
        guard let index = entries.lastIndex(where: { $0.commandID == commandID && $0.role == role }) else { return }
        if change(&entries[index]) {
            version += 1
            entries[index].version = version
        }
    }
}
