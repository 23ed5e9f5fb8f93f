import AgentFlowCore
import AgentFlowInMemory
import Foundation
import Testing

/// The package root, found from this file's path, so tests can read examples/.
let packageRoot: URL = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A registry like the executable's: the in-memory modules.
func inMemoryRegistry() -> ModuleRegistry {
    var registry = ModuleRegistry()
    registry.register(transport: InMemoryTransportModule.self)
    registry.register(discovery: InMemoryDiscoveryModule.self)
    return registry
}

/// Writes `text` to a fresh temporary file and returns its path.
func temporaryFile(_ text: String, name: String = "config.yml") throws -> String {
    let folder = FileManager.default.temporaryDirectory.appending(path: "agentflow-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let file = folder.appending(path: name)
    try text.write(to: file, atomically: true, encoding: .utf8)
    return file.path()
}

/// Loads a config from YAML text and returns the error it is refused with.
func configError(_ yaml: String, environment: [String: String] = [:], registry: ModuleRegistry = inMemoryRegistry()) throws -> ConfigError {
    let file = try temporaryFile(yaml)
    do {
        _ = try ConfigLoader.load(file: file, role: nil, environment: environment, registry: registry)
    } catch {
        return error
    }
    Issue.record("config was accepted:\n\(yaml)")
    throw CancellationError()
}

/// Runs `body` with a deadline, failing the test instead of hanging.
func withTimeout<T: Sendable>(
    _ duration: Duration = .seconds(5), _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: duration)
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw TimeoutError(duration: duration)
        }
        group.cancelAll()
        return value
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    let duration: Duration
    var description: String { "timed out after \(duration)" }
}
