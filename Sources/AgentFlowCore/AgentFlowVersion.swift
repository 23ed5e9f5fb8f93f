/// The software version every AgentFlow node reports in its `Hello`, its
/// signal-server record and `agentflow --version`.
public enum AgentFlowVersion {
    /// Semantic version of this build.
    public static let current = "0.1.0"
    /// Version of the wire contract's meaning (`Hello.protocol_version`).
    /// Bumped only for incompatible changes; new fields and message kinds do not bump it.
    public static let protocolVersion: UInt32 = 1
}
