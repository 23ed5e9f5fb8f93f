import AgentFlowCore
import AgentFlowDiscovery
import AgentFlowGRPC
import AgentFlowInMemory
import AgentFlowTCP

/// The modules this build of `agentflow` links, registered by name. A
/// distribution that adds its own transport or discovery backend builds its
/// own executable with one more `register` line here.
enum ModuleAssembly {
    static func registry() -> ModuleRegistry {
        var registry = ModuleRegistry()
        // The first registered transport is the default: gRPC, which any gRPC client can reach.
        registry.register(transport: GRPCTransportModule.self)
        registry.register(transport: TCPTransportModule.self)
        registry.register(transport: InMemoryTransportModule.self)
        registry.register(discovery: InMemoryDiscoveryModule.self)
        registry.register(discovery: StaticPeersDiscoveryModule.self)
        registry.register(discovery: SignalDiscoveryModule.self)
        // A master with no config looks for a signal server on loopback (it keeps running without one).
        registry.defaultDiscovery = SignalDiscoveryModule.name
        return registry
    }
}
