import AgentFlowHTTP
import AgentFlowTransportKit
import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird's HTTP/1 child channel, with each connection's request loop run
/// on the connection's own event loop instead of the global concurrency pool
/// (and `StrictHTTP1`'s HTTP/1.0 rule).
///
/// Why: at a fixed, modest request rate (a fleet's `/list` polls and REST
/// heartbeats), a request's cost is its thread hops, not its parsing. Served
/// from the pool, every request wakes a pool thread to run the router and then
/// the event loop again to write the answer (~25 µs per wake-up here, plus the
/// scheduler switches `perf` shows). Run on the loop, the decoded request, the
/// router, the middleware, the memory store and the response write stay on one
/// thread. Anything that blocks is already off the loop: the Redis store runs
/// its commands on its own thread pool.
struct LoopBoundHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        http1.setup(channel: channel, logger: logger).map { value in
            StrictHTTP1.addHTTP10Close(to: channel, logger: logger)
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopTaskExecutor.for(value.channel.eventLoop)) {
            await http1.handle(value: value, logger: logger)
        }
    }
}

extension HTTPServerBuilder {
    /// `.http1(configuration:)`, with requests served on their connection's event loop.
    static func loopBoundHTTP1(configuration: HTTP1Channel.Configuration) -> HTTPServerBuilder {
        .init { responder in LoopBoundHTTP1Channel(http1: HTTP1Channel(responder: responder, configuration: configuration)) }
    }
}
