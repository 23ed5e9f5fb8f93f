import AgentFlowCore
import NIOPosix
import Synchronization

/// An async HTTP client over libcurl. libcurl's easy interface blocks, so
/// requests run on a NIO thread pool of their own  (never on an event loop or a Swift
/// concurrency thread); idle handles are pooled so keep-alive connections
/// are reused.
public final class CurlHTTPClient: Sendable {
    /// Blocking calls run here, on threads of this client kind's own: never
    /// on an event loop or a Swift concurrency thread, and never competing
    /// with another blocking client it may be waiting on (a curl request to a
    /// signal server whose store is Redis, in one process).
    static let threadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 8)
        pool.start()
        return pool
    }()

    /// `@unchecked Sendable`: a box is held either by the pool (under its lock)
    /// or by the single thread-pool job that checked it out.
    private final class HandleBox: @unchecked Sendable {
        let handle: CurlEasyHandle
        init(_ handle: CurlEasyHandle) { self.handle = handle }
    }

    private let idle = Mutex<[HandleBox]>([])
    private let maxIdle: Int

    public init(maxIdleHandles: Int = 4) {
        maxIdle = maxIdleHandles
    }

    /// Performs one request; see `CurlEasyHandle.perform`. Cancelling the
    /// calling task aborts the transfer (within about a second) and throws
    /// `CancellationError`.
    public func request(
        _ method: String, _ url: String, headers: [String] = [], body: [UInt8]? = nil,
        timeoutMilliseconds: Int = 5_000, maxBodyBytes: Int = 4 << 20
    ) async throws -> CurlEasyHandle.Response {
        let cancellation = CurlCancellation()
        return try await withTaskCancellationHandler {
            try await Self.threadPool.runIfActive { [self] in
                let box = try idle.withLock { $0.popLast() } ?? HandleBox(CurlEasyHandle())
                defer { idle.withLock { pool in if pool.count < maxIdle { pool.append(box) } } }
                return try box.handle.perform(
                    method: method, url: url, headers: headers, body: body,
                    timeoutMilliseconds: timeoutMilliseconds, maxBodyBytes: maxBodyBytes, cancellation: cancellation)
            }
        } onCancel: {
            cancellation.cancel()
        }
    }
}
