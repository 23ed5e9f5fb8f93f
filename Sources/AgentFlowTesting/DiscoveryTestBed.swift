public import AgentFlowCore

/// What the discovery conformance suite needs from a backend under test: a
/// way to build it, and control of the source it reads (a file, a server, a
/// resolver), so the suite can change, break and repair that source.
///
/// The suite's peers are `peer-N` at `tcp://127.0.0.(10+N):7000`. A backend
/// that learns only addresses (DNS) reports them as
/// `PeerSetUpdate.unidentified`; the suite compares endpoint sets, and
/// checks only that every peer a backend names is one it was given.
public protocol DiscoveryTestBed: Sendable {
    /// Builds the backend, reading the source this bed controls and noticing
    /// a change within ``refreshInterval``.
    func makeDiscovery(context: DiscoveryContext) async throws -> any Discovery

    /// The longest a change of the source takes to show in the stream.
    var refreshInterval: Duration { get }

    /// Makes the source say exactly `peers` from now on.
    func setPeers(_ peers: [DiscoveredPeer]) async throws

    /// Makes the source fail as it would in the field (the server down, the
    /// file unreadable, the name not resolving). The backend should report
    /// that as `degraded` and keep its last good set.
    func breakSource() async throws

    /// Undoes ``breakSource()``.
    func repairSource() async throws

    /// How many times the backend has read its source so far, when the bed
    /// can tell; nil when it cannot. With a count, the cancellation check
    /// also proves that a cancelled backend stops reading. Default: nil.
    func sourceReads() async -> Int?
}

extension DiscoveryTestBed {
    public func sourceReads() async -> Int? { nil }
}
