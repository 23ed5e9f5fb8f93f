import AgentFlowCore
import ArgumentParser
import Foundation

/// Loads a process's config, or says what is wrong with it (file:line, key, value,
/// what is allowed) on stderr and exits 1: a bad config never starts a process.
func loadConfigOrExit<T>(_ load: () throws(ConfigError) -> T) throws -> T {
    do {
        return try load()
    } catch {
        FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
        throw ExitCode(1)
    }
}
