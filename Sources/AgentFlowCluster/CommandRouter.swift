public import AgentFlowCore
import AgentFlowMesh
public import AgentFlowProto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Synchronization

/// What a master does when a command reaches it: runs an allowed action.
public protocol CommandActions: Sendable {
    /// Every action this node knows (allowed or not); others are `unknown_action`.
    var knownActions: Set<String> { get }
    func perform(_ action: String, args: [String: String]) async -> CommandRouter.Result
}

/// Issues control commands to any master and waits for their results. The
/// routing, de-duplication and at-most-once rules are `CommandProtocol`'s,
/// inside the node's `MeshState`; this type only waits.
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

    let mesh: MeshNode
    let effects: ClusterEffects
    let localID: NodeID

    init(mesh: MeshNode, effects: ClusterEffects, localID: NodeID) {
        self.mesh = mesh
        self.effects = effects
        self.localID = localID
    }

    /// Runs `action` on `target` and waits for its result (at most `timeout`).
    public func execute(target: NodeID, action: String, args: [String: String], idempotencyKey: String? = nil, timeout: Duration) async -> Outcome {
        let clock = ContinuousClock()
        let start = clock.now
        let commandID = UUID().uuidString.lowercased()
        effects.state.withLock { $0.waiters[commandID] = ClusterEffects.Waiter() }
        defer {
            effects.state.withLock { _ = $0.waiters.removeValue(forKey: commandID) }
            mesh.withProtocol(CommandProtocol.self) { $0.forget(commandID, context: &$1) }
        }
        let issued = mesh.withProtocol(CommandProtocol.self) {
            $0.issue(commandID: commandID, target: target, action: action, args: args, idempotencyKey: idempotencyKey, timeout: timeout, context: &$1)
        } ?? .unreachable("this node runs no command protocol")
        if case .unreachable(let reason) = issued { return .unreachable(reason) }
        let effects = effects
        let result: Result? = await withTaskGroup(of: Result?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let ready = effects.state.withLock { state -> Result?? in
                        if let result = state.waiters[commandID]?.result { return .some(result) }
                        state.waiters[commandID]?.continuation = continuation
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
            let waiting = effects.state.withLock { state -> CheckedContinuation<Result?, Never>? in
                defer { state.waiters[commandID]?.continuation = nil }
                return state.waiters[commandID]?.continuation
            }
            waiting?.resume(returning: nil)
            group.cancelAll()
            return first
        }
        let receiptAt = effects.state.withLock { $0.waiters[commandID]?.receiptAt }
        guard let result else { return .timedOut(receipt: receiptAt != nil || issued == .local, after: clock.now - start) }
        return .answered(result, target: target, receiptAfter: issued == .local ? .zero : receiptAt.map { $0 - start }, total: clock.now - start)
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
