import AgentFlowCore
import AgentFlowProto

/// What a node's probes found about reaching it from outside, in short:
/// spread with peer exchange so every member knows which peers it can dial.
/// A node outside another's network does not dial a peer whose dial-back
/// failed (`dialable == .no`); that peer dials out instead.
public struct PeerReachability: Sendable, Hashable, Codable {
    public enum Dialable: String, Sendable, Hashable, Codable {
        case unknown, yes, no
    }

    /// The node's address as a STUN server saw it; nil when unknown.
    public var publicAddress: String?
    /// RFC 4787 mapping class, `none` without NAT; nil when unknown.
    public var mapping: String?
    /// RFC 4787 filtering class; nil when unknown.
    public var filtering: String?
    public var dialable: Dialable
    /// When the node's probes ran (Unix microseconds, the node's clock).
    public var checkedAtMicros: Int64

    public init(publicAddress: String?, mapping: String?, filtering: String?, dialable: Dialable, checkedAtMicros: Int64) {
        self.publicAddress = publicAddress
        self.mapping = mapping
        self.filtering = filtering
        self.dialable = dialable
        self.checkedAtMicros = checkedAtMicros
    }

    enum CodingKeys: String, CodingKey {
        case publicAddress = "public_address", mapping, filtering, dialable, checkedAtMicros = "checked_at_unix_micros"
    }

    var wire: Agentflow_Mesh_V1_Reachability {
        var wire = Agentflow_Mesh_V1_Reachability()
        wire.publicAddress = publicAddress ?? ""
        wire.mapping = mapping ?? ""
        wire.filtering = filtering ?? ""
        wire.dialable = switch dialable {
        case .unknown: .unspecified
        case .yes: .yes
        case .no: .no
        }
        wire.checkedAtUnixMicros = checkedAtMicros
        return wire
    }

    /// From the wire, bounded (a peer's strings are cut to sane lengths); nil when empty.
    init?(wire: Agentflow_Mesh_V1_Reachability) {
        guard wire.checkedAtUnixMicros > 0 else { return nil }
        func text(_ value: String) -> String? { value.isEmpty ? nil : String(value.prefix(64)) }
        publicAddress = text(wire.publicAddress)
        mapping = text(wire.mapping)
        filtering = text(wire.filtering)
        dialable = switch wire.dialable {
        case .yes: .yes
        case .no: .no
        default: .unknown
        }
        checkedAtMicros = wire.checkedAtUnixMicros
    }
}
