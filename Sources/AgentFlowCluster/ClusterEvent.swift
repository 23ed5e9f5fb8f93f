public import AgentFlowProto

/// One event of an origin's ordered stream: the four kinds that carry an `EventHeader`.
public enum ClusterEvent: Sendable, Hashable {
    case status(Agentflow_Mesh_V1_NodeStatusUpdate)
    case taskStatus(Agentflow_Mesh_V1_TaskStatus)
    case taskLog(Agentflow_Mesh_V1_TaskLog)
    case alert(Agentflow_Mesh_V1_Alert)

    /// The event in an envelope, or nil when the envelope carries something else.
    public init?(_ envelope: Agentflow_Mesh_V1_Envelope) {
        switch envelope.body {
        case .statusUpdate(let value): self = .status(value)
        case .taskStatus(let value): self = .taskStatus(value)
        case .taskLog(let value): self = .taskLog(value)
        case .alert(let value): self = .alert(value)
        default: return nil
        }
    }

    public var header: Agentflow_Mesh_V1_EventHeader {
        get {
            switch self {
            case .status(let value): value.header
            case .taskStatus(let value): value.header
            case .taskLog(let value): value.header
            case .alert(let value): value.header
            }
        }
        set {
            switch self {
            case .status(var value): value.header = newValue; self = .status(value)
            case .taskStatus(var value): value.header = newValue; self = .taskStatus(value)
            case .taskLog(var value): value.header = newValue; self = .taskLog(value)
            case .alert(var value): value.header = newValue; self = .alert(value)
            }
        }
    }

    public var envelope: Agentflow_Mesh_V1_Envelope {
        var envelope = Agentflow_Mesh_V1_Envelope()
        switch self {
        case .status(let value): envelope.statusUpdate = value
        case .taskStatus(let value): envelope.taskStatus = value
        case .taskLog(let value): envelope.taskLog = value
        case .alert(let value): envelope.alert = value
        }
        return envelope
    }

    /// `status`, `task_status`, `task_log` or `alert`.
    public var kind: String {
        switch self {
        case .status: "status"
        case .taskStatus: "task_status"
        case .taskLog: "task_log"
        case .alert: "alert"
        }
    }
}
