public import AgentFlowProto

/// Everything a master knows about every origin (itself included): each
/// origin's current state, its place in that origin's ordered stream
/// (incarnation, last sequence), and a bounded log of its recent events to
/// hand peers that missed them.
///
/// Rules:
/// - an origin's events apply strictly in sequence; a duplicate or an event of
///   an older incarnation is dropped; a gap is reported (the caller asks the
///   sender to sync) and the event is not applied out of order;
/// - a newer incarnation (the origin restarted) starts over from sequence 1;
/// - a snapshot replaces an origin's state only if it is ahead of what is held.
///
/// Not thread-safe: owned by `ClusterNode` under its lock.
public struct ClusterStore: Sendable {
    public enum Outcome: Equatable, Sendable {
        case applied
        case duplicate
        /// From an older incarnation than the one held.
        case stale
        /// The origin's stream skipped ahead: `expected` is the next sequence held.
        case gap(expected: UInt64)
    }

    public struct Origin: Sendable {
        public var state: Agentflow_Mesh_V1_NodeState
        /// Recent events, oldest first; `log.first` has sequence `firstLogged`.
        var log: [ClusterEvent] = []
        var logHead = 0
        /// Unix microseconds when this node applied the origin's last event (freshness).
        public var lastAppliedAtMicros: Int64 = 0
        /// The neighbour the last new event came through (the origin itself when direct; nil for the local node).
        public var via: String?

        var retained: ArraySlice<ClusterEvent> { log[logHead...] }
        var firstLogged: UInt64? { retained.first.map { $0.header.sequence } }
    }

    public let retainedPerOrigin: Int
    public let recentLogLines: Int
    /// A bug planted by the simulator (`PlantedBug.gapCheck`), to show it is found: an event that skips ahead is applied.
    package var acceptsGaps = false
    public private(set) var origins: [String: Origin] = [:]

    public init(retainedPerOrigin: Int = 4_096, recentLogLines: Int = 50) {
        self.retainedPerOrigin = max(16, retainedPerOrigin)
        self.recentLogLines = recentLogLines
    }

    // MARK: Applying

    public mutating func apply(_ event: ClusterEvent, via: String?, nowMicros: Int64) -> Outcome {
        let header = event.header
        let id = header.origin
        guard origins[id] != nil else {
            guard header.sequence == 1 else { return .gap(expected: 1) }
            origins[id] = Origin(state: Self.emptyState(id, incarnation: header.incarnation))
            Self.fold(event, into: &origins[id]!, via: via, nowMicros: nowMicros, retained: retainedPerOrigin, recentLogLines: recentLogLines)
            return .applied
        }
        // Mutated in place through the dictionary: a copy would duplicate the retained log per event.
        let retained = retainedPerOrigin
        let recent = recentLogLines
        return Self.apply(event, to: &origins[id]!, via: via, nowMicros: nowMicros, acceptsGaps: acceptsGaps) { event, origin, via, now in
            Self.fold(event, into: &origin, via: via, nowMicros: now, retained: retained, recentLogLines: recent)
        }
    }

    private static func apply(
        _ event: ClusterEvent, to origin: inout Origin, via: String?, nowMicros: Int64, acceptsGaps: Bool,
        fold: (ClusterEvent, inout Origin, String?, Int64) -> Void
    ) -> Outcome {
        let header = event.header
        let held = (origin.state.incarnation, origin.state.lastSequence)
        if header.incarnation < held.0 { return .stale }
        if header.incarnation == held.0 {
            if header.sequence <= held.1 { return .duplicate }
            if header.sequence != held.1 + 1 && !acceptsGaps { return .gap(expected: held.1 + 1) }
        } else {
            // A newer run of the origin: its stream starts at 1; its old state (tasks, alerts) is gone with it.
            guard header.sequence == 1 else { return .gap(expected: 1) }
            origin = Origin(state: emptyState(header.origin, incarnation: header.incarnation))
        }
        fold(event, &origin, via, nowMicros)
        return .applied
    }

    static func emptyState(_ id: String, incarnation: UInt64) -> Agentflow_Mesh_V1_NodeState {
        var state = Agentflow_Mesh_V1_NodeState()
        state.origin = id
        state.incarnation = incarnation
        return state
    }

    private static func fold(_ event: ClusterEvent, into origin: inout Origin, via: String?, nowMicros: Int64, retained retainedPerOrigin: Int, recentLogLines: Int) {
        let header = event.header
        origin.state.lastSequence = header.sequence
        origin.state.lastEventUnixMicros = header.timestampUnixMicros
        origin.lastAppliedAtMicros = nowMicros
        origin.via = via
        switch event {
        // The lists are taken out of the message while they change: changed through its
        // accessors, each change would copy the whole list (the message still holds it).
        case .status(let status):
            origin.state.status = status
        case .taskStatus(let task):
            var tasks = origin.state.tasks
            origin.state.tasks = []
            if let index = tasks.firstIndex(where: { $0.task == task.task }) {
                tasks[index] = task
            } else {
                tasks.append(task)
            }
            origin.state.tasks = tasks
        case .taskLog(let line):
            var logs = origin.state.recentLogs
            origin.state.recentLogs = []
            logs.append(line)
            if logs.count > recentLogLines { logs.removeFirst(logs.count - recentLogLines) }
            origin.state.recentLogs = logs
        case .alert(let alert):
            var alerts = origin.state.activeAlerts
            origin.state.activeAlerts = []
            alerts.removeAll { $0.alertID == alert.alertID }
            if alert.active { alerts.append(alert) }
            origin.state.activeAlerts = alerts
        }
        origin.log.append(event)
        if origin.log.count - origin.logHead > retainedPerOrigin { origin.logHead += 1 }
        if origin.logHead > retainedPerOrigin { origin.log.removeFirst(origin.logHead); origin.logHead = 0 }
    }

    /// Takes a peer's snapshot of an origin if it is ahead of what is held. The
    /// retained log restarts after it (earlier gaps of others are then served as snapshots).
    @discardableResult
    public mutating func applySnapshot(_ state: Agentflow_Mesh_V1_NodeState, via: String?, nowMicros: Int64) -> Bool {
        guard !state.origin.isEmpty else { return false }
        if let held = origins[state.origin] {
            let ahead = state.incarnation > held.state.incarnation
                || (state.incarnation == held.state.incarnation && state.lastSequence > held.state.lastSequence)
            guard ahead else { return false }
        }
        var origin = Origin(state: state)
        origin.lastAppliedAtMicros = nowMicros
        origin.via = via
        origins[state.origin] = origin
        return true
    }

    // MARK: Sync

    /// The last event held of `origin`, as a cursor; nil when nothing is held.
    public func cursor(of origin: String) -> Agentflow_Mesh_V1_OriginCursor? {
        guard let state = origins[origin]?.state else { return nil }
        var cursor = Agentflow_Mesh_V1_OriginCursor()
        cursor.origin = state.origin
        cursor.incarnation = state.incarnation
        cursor.lastSequence = state.lastSequence
        return cursor
    }

    /// "The last event I hold of each origin": what a `SyncRequest` carries.
    public func cursors() -> [Agentflow_Mesh_V1_OriginCursor] {
        origins.values.map { origin in
            var cursor = Agentflow_Mesh_V1_OriginCursor()
            cursor.origin = origin.state.origin
            cursor.incarnation = origin.state.incarnation
            cursor.lastSequence = origin.state.lastSequence
            return cursor
        }.sorted { $0.origin < $1.origin }
    }

    /// What a peer whose cursors are `theirs` lacks: per origin, the missing
    /// events from the retained log, or a snapshot when the log no longer
    /// reaches back far enough (or the peer holds an older incarnation).
    /// With `only`, just those origins (a graft asks for the origins it names).
    public func missing(for theirs: [Agentflow_Mesh_V1_OriginCursor], only: Set<String>? = nil, limit: Int = 100_000) -> (events: [ClusterEvent], snapshots: [Agentflow_Mesh_V1_NodeState]) {
        let known = Dictionary(theirs.map { ($0.origin, $0) }, uniquingKeysWith: { a, _ in a })
        var events: [ClusterEvent] = []
        var snapshots: [Agentflow_Mesh_V1_NodeState] = []
        for (id, origin) in origins.sorted(by: { $0.key < $1.key }) where only?.contains(id) ?? true {
            let mine = origin.state
            let next: UInt64
            if let cursor = known[id] {
                if cursor.incarnation > mine.incarnation { continue }
                if cursor.incarnation == mine.incarnation {
                    guard cursor.lastSequence < mine.lastSequence else { continue }
                    next = cursor.lastSequence + 1
                } else {
                    next = 1
                }
            } else {
                next = 1
            }
            if let first = origin.firstLogged, first <= next, events.count + Int(mine.lastSequence - next) < limit {
                events.append(contentsOf: origin.retained.dropFirst(Int(next - first)))
            } else {
                snapshots.append(mine)
            }
        }
        return (events, snapshots)
    }
}
