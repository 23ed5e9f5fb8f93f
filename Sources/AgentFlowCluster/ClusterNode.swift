public import AgentFlowCore
public import AgentFlowMesh
public import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import Logging
import Synchronization

/// How cluster state flows; from the `state:` block of a master's config.
public struct ClusterOptions: Sendable {
    /// Events kept per origin to hand peers that missed them; older gaps get a snapshot.
    public var retainedEvents: Int
    /// Every link exchanges cursors this often, so a trailing loss is repaired without new traffic.
    public var syncInterval: Duration
    /// Relay hops an event or command may take.
    public var hopLimit: UInt32
    /// Log lines kept per origin in its state.
    public var recentLogLines: Int
    /// Lazy push: how often a node tells its off-tree links which events it holds.
    public var announceInterval: Duration
    /// How long an announced event may take to arrive along the tree before this node grafts.
    public var graftTimeout: Duration

    public init(retainedEvents: Int = 4_096, syncInterval: Duration = .seconds(5), hopLimit: UInt32 = 16, recentLogLines: Int = 50,
                announceInterval: Duration = .milliseconds(100), graftTimeout: Duration = .milliseconds(250)) {
        self.retainedEvents = retainedEvents
        self.syncInterval = syncInterval
        self.hopLimit = hopLimit
        self.recentLogLines = recentLogLines
        self.announceInterval = announceInterval
        self.graftTimeout = graftTimeout
    }
}

/// A change to the cluster view, as subscribers (`updates()`) see it.
public enum ClusterUpdate: Sendable {
    /// An event applied (local or from a peer), in its origin's order.
    case event(ClusterEvent)
    /// An origin's state replaced by a snapshot from a peer.
    case snapshot(Agentflow_Mesh_V1_NodeState)
}

/// The cluster-state layer of a master, on top of the mesh: a thin handle
/// on the `ClusterProtocol` and `CommandProtocol` that the node's `MeshState`
/// owns (see those types for the rules), plus what only a runner can do:
/// subscribers, and running command actions.
///
/// ```swift
/// let cluster = ClusterNode(localID: id, incarnation: run, options: options, commands: policy) { protocols, effects in
///     MeshNode(identity: identity, transports: transports, discovery: discovery, options: meshOptions,
///              protocols: protocols, effects: effects)
/// }
/// cluster.publish(.status(sample))
/// ```
public final class ClusterNode: Sendable {
    public let localID: NodeID
    public let incarnation: UInt64
    public let options: ClusterOptions
    /// The mesh this layer runs on; it owns the cluster's state.
    public let mesh: MeshNode
    /// Issues control commands to any master.
    public let commands: CommandRouter
    let effects: ClusterEffects

    /// What happened to events here, for `/metrics` and the benchmark.
    public struct Counters: Sendable {
        public var published: UInt64 = 0
        public var applied: UInt64 = 0
        public var duplicates: UInt64 = 0
        public var stale: UInt64 = 0
        public var gaps: UInt64 = 0
        public var relayed: UInt64 = 0
        public var skippedFullQueue: UInt64 = 0
        public var snapshotsApplied: UInt64 = 0
        public var syncEventsSent: UInt64 = 0
        public var syncSnapshotsSent: UInt64 = 0
        /// Lazy push: announcements sent, origins they named, and their encoded bytes.
        public var announcements: UInt64 = 0
        public var announcedOrigins: UInt64 = 0
        public var announcementBytes: UInt64 = 0
        /// Tree repair: grafts this node asked for, prunes it sent.
        public var grafts: UInt64 = 0
        public var prunes: UInt64 = 0
        public init() {}
    }

    /// Which actions commands may run here.
    public struct CommandPolicy: Sendable {
        /// Actions the config allows.
        public var allowed: Set<String>
        /// Every action this node knows (allowed or not); others are `unknown_action`.
        public var known: Set<String>
        public init(allowed: Set<String>, known: Set<String>) {
            self.allowed = allowed
            self.known = known
        }
    }

    /// - Parameter makeMesh: builds the node's mesh with the cluster's protocols and effects.
    public init(localID: NodeID, incarnation: UInt64, options: ClusterOptions = ClusterOptions(), commands policy: CommandPolicy,
                logger: Logger = Logger(label: "agentflow.cluster"),
                mesh makeMesh: ([any MeshProtocol], any MeshEffects) -> MeshNode) {
        self.localID = localID
        self.incarnation = incarnation
        self.options = options
        let effects = ClusterEffects()
        self.effects = effects
        mesh = makeMesh([
            ClusterProtocol(localID: localID, incarnation: incarnation, options: options),
            CommandProtocol(localID: localID, allowed: policy.allowed, knownActions: policy.known, hopLimit: options.hopLimit),
        ], effects)
        commands = CommandRouter(mesh: mesh, effects: effects, localID: localID)
    }

    // MARK: Publishing

    /// Publishes a local change: stamps it with this node's next sequence and
    /// queues it on every link, in one step. Returns the event as stamped.
    @discardableResult
    public func publish(_ event: ClusterEvent) -> ClusterEvent {
        mesh.withProtocol(ClusterProtocol.self) { $0.publish(event, context: &$1) } ?? event
    }

    /// Every change to the cluster view from now on, in each origin's order.
    public func updates() -> AsyncStream<ClusterUpdate> { effects.subscribe() }

    // MARK: The view

    /// Every origin's state, the local node's included.
    public func origins() -> [String: ClusterStore.Origin] { mesh.read(ClusterProtocol.self) { $0.store.origins } ?? [:] }

    /// The newest commands issued or run here (what the dashboard lists).
    public func commandJournal() -> CommandJournal { mesh.read(CommandProtocol.self) { $0.journal } ?? CommandJournal() }

    public var counters: Counters {
        var counters = mesh.read(ClusterProtocol.self) { $0.counters } ?? Counters()
        counters.skippedFullQueue = mesh.droppedSends
        return counters
    }

    /// True when this node holds state of `origin` (it has heard of it).
    public func knows(_ origin: NodeID) -> Bool { mesh.read(ClusterProtocol.self) { $0.store.origins[origin.rawValue] != nil } ?? false }

    /// Runs the actions of commands addressed to this node until cancelled.
    public func run(actions: any CommandActions) async {
        await withDiscardingTaskGroup { group in
            for await run in effects.runs {
                group.addTask {
                    let result = await actions.perform(run.action, args: run.args)
                    self.mesh.withProtocol(CommandProtocol.self) { $0.finished(run.commandID, result: result, context: &$1) }
                }
            }
        }
    }
}

/// What the cluster's protocols ask of the runner: updates for subscribers,
/// actions to run, answers for waiting callers.
final class ClusterEffects: MeshEffects {
    struct Waiter {
        var receiptAt: ContinuousClock.Instant?
        var continuation: CheckedContinuation<CommandRouter.Result?, Never>?
        var result: CommandRouter.Result?
    }

    struct State {
        var subscribers: [UInt64: AsyncStream<ClusterUpdate>.Continuation] = [:] {
            didSet { subscriberList = Array(subscribers.values) }
        }
        /// The same, as a list: read for every delivered update.
        var subscriberList: [AsyncStream<ClusterUpdate>.Continuation] = []
        var nextSubscriber: UInt64 = 0
        var waiters: [String: Waiter] = [:]
    }

    let state = Mutex(State())
    let runs: AsyncStream<CommandProtocol.Run>
    private let runContinuation: AsyncStream<CommandProtocol.Run>.Continuation

    init() {
        (runs, runContinuation) = AsyncStream.makeStream(of: CommandProtocol.Run.self)
    }

    func perform(_ effect: any Sendable, node: MeshNode) {
        switch effect {
        case let delivery as ClusterProtocol.Delivery:
            for subscriber in state.withLock({ $0.subscriberList }) { subscriber.yield(delivery.update) }
        case let run as CommandProtocol.Run:
            runContinuation.yield(run)
        case let receipt as CommandProtocol.Receipt:
            state.withLock { $0.waiters[receipt.commandID]?.receiptAt = .now }
        case let answer as CommandProtocol.Answer:
            let continuation = state.withLock { state -> CheckedContinuation<CommandRouter.Result?, Never>? in
                guard state.waiters[answer.commandID] != nil else { return nil }
                state.waiters[answer.commandID]!.result = answer.result
                defer { state.waiters[answer.commandID]!.continuation = nil }
                return state.waiters[answer.commandID]!.continuation
            }
            continuation?.resume(returning: answer.result)
        default:
            break
        }
    }

    func subscribe() -> AsyncStream<ClusterUpdate> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterUpdate.self, bufferingPolicy: .bufferingNewest(10_000))
        let id = state.withLock { state -> UInt64 in
            state.nextSubscriber += 1
            state.subscribers[state.nextSubscriber] = continuation
            return state.nextSubscriber
        }
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) } }
        return stream
    }
}
