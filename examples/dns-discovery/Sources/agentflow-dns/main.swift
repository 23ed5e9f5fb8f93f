import AgentFlowCLI
import DNSDiscovery

// The whole distribution: AgentFlow's modules, plus DNS discovery.
var modules = AgentFlowModules.standard
modules.register(discovery: DNSDiscoveryModule.self)
await AgentFlowCLI.main(modules)
