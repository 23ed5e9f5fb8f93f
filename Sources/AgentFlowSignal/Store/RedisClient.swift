import AgentFlowCore
import NIOPosix
import Synchronization

/// A small pool of blocking hiredis connections, driven from a NIO thread
/// pool of their own  so no event loop or
/// Swift concurrency thread ever blocks on Redis.
final class RedisClient: Sendable {
    /// Blocking calls run here, on threads of this client kind's own: never
    /// on an event loop or a Swift concurrency thread, and never competing
    /// with another blocking client it may be waiting on (a curl request to a
    /// signal server whose store is Redis, in one process).
    static let threadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 8)
        pool.start()
        return pool
    }()

    let host: String
    let port: Int
    let database: Int
    private let idle = Mutex<[ConnectionBox]>([])
    private let maxIdle = 8

    /// Moves a connection between pool and worker thread.
    /// `@unchecked Sendable`: a box is only ever held by the pool (under its lock)
    /// or by the one thread-pool job that checked it out.
    private final class ConnectionBox: @unchecked Sendable {
        let connection: RedisConnection
        init(_ connection: RedisConnection) { self.connection = connection }
    }

    /// Parses `redis://host:port/db` and checks the server answers PING.
    init(url: String) throws {
        guard url.hasPrefix("redis://") else { throw RedisError("bad_url", "expected redis://host:port/db, got \(url)") }
        var rest = Substring(url.dropFirst("redis://".count))
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let db = Int(dbText), db >= 0 else { throw RedisError("bad_url", "database in \(url) must be a number") }
                database = db
            }
            rest = rest[..<slash]
        }
        guard let address = HostPort(parsing: rest.contains(":") ? String(rest) : "\(rest):6379") else {
            throw RedisError("bad_url", "expected redis://host:port/db, got \(url)")
        }
        host = address.host
        port = address.port
        self.database = database
        let connection = try RedisConnection(host: host, port: port, database: database)
        guard case .status("PONG") = try connection.command(["PING"]) else {
            throw RedisError("redis_error", "Redis at \(address) did not answer PING")
        }
        idle.withLock { $0.append(ConnectionBox(connection)) }
    }

    /// Runs one command on a pooled connection.
    func command(_ arguments: [String]) async throws -> RedisReply {
        try await Self.threadPool.runIfActive { [self] in
            let box = try idle.withLock { $0.popLast() } ?? ConnectionBox(RedisConnection(host: host, port: port, database: database))
            // A failed command drops the connection (it is not returned to the pool).
            let reply = try box.connection.command(arguments)
            if !box.connection.isBroken {
                idle.withLock { pool in if pool.count < maxIdle { pool.append(box) } }
            }
            if case .error(let message) = reply {
                throw RedisError("redis_error", "Redis refused \(arguments.first ?? ""): \(message)")
            }
            return reply
        }
    }
}
