import AgentFlowCLI

// `agentflow` is the command line with the modules AgentFlow ships; a
// distribution's main.swift registers its own before this call.
await AgentFlowCLI.main(AgentFlowModules.standard)
