import AgentFlowCore
import AgentFlowInMemory

/// The modules this build of `agentflow` links, registered by name. A
/// distribution that adds its own transport or discovery backend builds its
/// own executable with one more `register` line here.
enum ModuleAssembly {
    static func registry() -> ModuleRegistry {
        var registry = ModuleRegistry()
        registry.register(transport: InMemoryTransportModule.self)
        registry.register(discovery: InMemoryDiscoveryModule.self)
        return registry
    }
}
