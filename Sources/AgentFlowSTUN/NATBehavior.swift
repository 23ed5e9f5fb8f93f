/// How a NAT (or firewall) treats a node's UDP traffic, in RFC 4787's terms,
/// classified from RFC 5780 tests. `NATBehaviorDiscovery` runs the tests;
/// `classify` is the pure part, so every branch is tested without a network.
public enum NATBehaviorClass: String, Sendable, Hashable, CaseIterable {
    /// Mapping: one public port whatever the destination. Filtering: anyone may send to it.
    case endpointIndependent = "endpoint-independent"
    /// Mapping: a new port per destination IP. Filtering: only IPs the node sent to.
    case addressDependent = "address-dependent"
    /// Mapping: a new port per destination IP and port ("symmetric"). Filtering:
    /// only the exact IP:port the node sent to ("port-restricted").
    case addressAndPortDependent = "address-and-port-dependent"
}

/// What the node should expect for inbound links, in words a person acts on.
public enum NATVerdict: String, Sendable, Hashable {
    case direct
    case portForward = "port_forward"
    case relay

    public var sentence: String {
        switch self {
        case .direct: "direct links from outside will work"
        case .portForward: "direct links from outside need a port forward (links this node dials out work)"
        case .relay: "direct links from outside need a port forward; without one, peers behind NAT reach this node only through a relay (every destination gets a new public port, so hole punching fails)"
        }
    }
}

/// The raw answers of the RFC 5780 tests (§4.3 mapping, §4.4 filtering, §4.5 hairpinning).
public struct NATObservations: Sendable, Hashable {
    /// The socket's own address (the IP the kernel uses toward the server, and the port).
    public var local: STUNAddress
    /// Test I: the mapping seen by the server's primary address.
    public var mapped: STUNAddress
    /// OTHER-ADDRESS from test I; nil: the server offers no behaviour discovery.
    public var otherAddress: STUNAddress?
    /// Test II: the mapping seen at (alternate IP, primary port); nil when not answered.
    public var mappedAtAlternateIP: STUNAddress?
    /// Test III: the mapping seen at (alternate IP, alternate port); nil when not answered.
    public var mappedAtAlternate: STUNAddress?
    /// Filtering test II: an answer came from the alternate IP and port.
    public var answeredFromOtherAddress: Bool?
    /// Filtering test III: an answer came from the primary IP, alternate port.
    public var answeredFromOtherPort: Bool?
    /// A request sent to our own mapped address came back to us.
    public var hairpinned: Bool?

    public init(local: STUNAddress, mapped: STUNAddress) {
        self.local = local
        self.mapped = mapped
    }
}

/// The classification.
public struct NATBehavior: Sendable, Hashable {
    /// False when the mapped address is the socket's own: no NAT on the path.
    public var behindNAT: Bool
    /// nil when not determined (no OTHER-ADDRESS, or a test went unanswered).
    public var mapping: NATBehaviorClass?
    public var filtering: NATBehaviorClass?
    public var hairpinning: Bool?
    public var verdict: NATVerdict
    /// Why something is unknown, for the report.
    public var notes: [String]

    /// RFC 5780 §4.3–4.5 applied to `observations`.
    public static func classify(_ observations: NATObservations) -> NATBehavior {
        var notes: [String] = []
        let behindNAT = observations.mapped != observations.local
        // Without NAT there is no mapping to vary: the address is the socket's own.
        var mapping: NATBehaviorClass? = behindNAT ? nil : .endpointIndependent
        var filtering: NATBehaviorClass?
        if observations.otherAddress == nil {
            notes.append("the STUN server gave no OTHER-ADDRESS, so mapping and filtering were not tested (it needs a second address: stun.alternate)")
        } else {
            if !behindNAT {
                // Set above.
            } else if let second = observations.mappedAtAlternateIP {
                if second == observations.mapped {
                    mapping = .endpointIndependent
                } else if let third = observations.mappedAtAlternate {
                    mapping = third == second ? .addressDependent : .addressAndPortDependent
                } else {
                    notes.append("mapping test III (alternate address and port) got no answer")
                }
            } else {
                notes.append("mapping test II (alternate address) got no answer")
            }
            if observations.answeredFromOtherAddress == true {
                filtering = .endpointIndependent
            } else if observations.answeredFromOtherAddress == false, let port = observations.answeredFromOtherPort {
                filtering = port ? .addressDependent : .addressAndPortDependent
            } else {
                notes.append("the filtering tests did not run to the end")
            }
        }
        let verdict: NATVerdict
        switch (behindNAT, mapping, filtering) {
        case (false, _, .endpointIndependent?): verdict = .direct
        case (false, _, nil):
            verdict = .direct
            notes.append("no NAT on the path; a firewall may still drop inbound packets (filtering was not tested)")
        case (true, .addressDependent?, _), (true, .addressAndPortDependent?, _): verdict = .relay
        default: verdict = .portForward
        }
        return NATBehavior(behindNAT: behindNAT, mapping: mapping, filtering: filtering, hairpinning: observations.hairpinned, verdict: verdict, notes: notes)
    }
}
