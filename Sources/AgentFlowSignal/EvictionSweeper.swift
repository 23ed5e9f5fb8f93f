import AgentFlowCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import CoreMetrics
import ServiceLifecycle

/// Removes nodes that stopped heartbeating, every `sweep_interval`, off the
/// request path. A node is gone from `/list` within TTL plus one interval.
struct EvictionSweeper: Service, CustomStringConvertible {
    var description: String { "EvictionSweeper(every \(registry.settings.sweepInterval.configText))" }

    let registry: SignalRegistry
    let logger: Logger

    func run() async throws {
        let interval = registry.settings.sweepInterval.duration
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    await sweepOnce()
                }
            }
        } catch is CancellationError {
            return
        }
    }

    func sweepOnce(now: Date = Date()) async {
        let deadline = now.addingTimeInterval(-registry.ttlSeconds)
        do {
            let evicted = try await registry.store.evict(lastSeenBefore: deadline)
            for id in evicted {
                logger.info("evicted silent node", metadata: ["node_id": "\(id)"])
            }
            if !evicted.isEmpty { registry.metrics.evictions.increment(by: evicted.count) }
            let count = try await registry.store.nodeCount()
            registry.metrics.nodes.record(count)
            registry.fleetSize.withLock { $0 = count }
        } catch {
            registry.metrics.storeErrors.increment()
            logger.error("eviction sweep failed; will retry", metadata: ["error": "\(error)"])
        }
    }
}
