public import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowGRPC
import AgentFlowInMemory
import AgentFlowProbes
import AgentFlowTCP

/// The modules AgentFlow ships, ready to extend.
///
/// A distribution that adds its own transport, discovery backend or probe
/// starts from this registry, registers its modules, and hands the result to
/// ``AgentFlowCLI/main(_:arguments:)``:
///
/// ```swift
/// var modules = AgentFlowModules.standard
/// modules.register(discovery: DNSDiscoveryModule.self)
/// await AgentFlowCLI.main(modules)
/// ```
public enum AgentFlowModules {
    /// `grpc` (the default transport), `tcp` and `memory` transports; `signal`
    /// (the default discovery), `static` and `memory` discovery; the `signal`,
    /// `stun` and `reach` probes.
    public static var standard: ModuleRegistry {
        var registry = ModuleRegistry()
        // The first registered transport is the default: gRPC, which any gRPC client can reach.
        registry.register(transport: GRPCTransportModule.self)
        registry.register(transport: TCPTransportModule.self)
        registry.register(transport: InMemoryTransportModule.self)
        registry.register(discovery: InMemoryDiscoveryModule.self)
        registry.register(discovery: StaticPeersDiscoveryModule.self)
        registry.register(discovery: SignalDiscoveryModule.self)
        registry.register(probe: SignalProbeModule.self)
        registry.register(probe: STUNProbeModule.self)
        registry.register(probe: ReachProbeModule.self)
        // A master with no config looks for a signal server on loopback (it keeps running without one).
        registry.defaultDiscovery = SignalDiscoveryModule.name
        return registry
    }
}
