public import AgentFlowCore
import CHiredis
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A Redis reply, copied out of hiredis's reply object.
enum RedisReply: Sendable, Equatable {
    case string(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case status(String)
    case error(String)

    var stringValue: String? {
        switch self {
        case .string(let text), .status(let text): text
        case .integer(let value): String(value)
        default: nil
        }
    }

    var integerValue: Int64? {
        switch self {
        case .integer(let value): value
        case .string(let text): Int64(text)
        default: nil
        }
    }

    var arrayValue: [RedisReply] {
        if case .array(let items) = self { return items }
        return []
    }
}

/// A Redis failure with hiredis's or the server's own message.
public struct RedisError: AgentFlowError {
    public let code: String
    public let message: String
    init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// Owns one blocking hiredis `redisContext*`. Used by one thread at a time
/// (it lives in `RedisClient`'s pool and is checked out for one command),
/// never shared; freed in `deinit`.
final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>

    init(host: String, port: Int, database: Int, timeoutMilliseconds: Int = 2_000) throws {
        let timeout = timeval(tv_sec: timeoutMilliseconds / 1_000, tv_usec: (timeoutMilliseconds % 1_000) * 1_000)
        guard let context = redisConnectWithTimeout(host, Int32(port), timeout) else {
            throw RedisError("redis_unreachable", "cannot allocate a Redis connection to \(host):\(port)")
        }
        if context.pointee.err != 0 {
            let reason = Self.contextError(context)
            redisFree(context)
            throw RedisError("redis_unreachable", "cannot connect to Redis at \(host):\(port): \(reason)")
        }
        self.context = context
        redisSetTimeout(context, timeout)
        if database != 0 {
            if case .error(let message) = try command(["SELECT", String(database)]) {
                throw RedisError("redis_error", "SELECT \(database) failed: \(message)")
            }
        }
    }

    deinit {
        redisFree(context)
    }

    /// True once the connection failed; the pool then drops it.
    var isBroken: Bool { context.pointee.err != 0 }

    /// Sends one command (binary-safe arguments) and waits for its reply.
    func command(_ arguments: [String]) throws -> RedisReply {
        let buffers = arguments.map { Array($0.utf8CString) }
        var lengths = arguments.map { $0.utf8.count }
        let raw: UnsafeMutableRawPointer? = buffers.withPointers { pointers in
            var argv = pointers
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                redisCommandArgv(context, Int32(arguments.count), argvBuffer.baseAddress, &lengths)
            }
        }
        guard let raw else {
            throw RedisError("redis_io", "Redis command \(arguments.first ?? "") failed: \(Self.contextError(context))")
        }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return Self.convert(reply)
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let value = reply.pointee
        func text() -> String {
            guard let pointer = value.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: value.len), as: UTF8.self)
        }
        switch Int32(value.type) {
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_ERROR: return .error(text())
        case REDIS_REPLY_INTEGER: return .integer(value.integer)
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            for index in 0..<value.elements {
                if let element = value.element[index] { items.append(convert(element)) }
            }
            return .array(items)
        default: return .null
        }
    }

    private static func contextError(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }
}

@available(*, unavailable)
extension RedisConnection: Sendable {}

extension Array where Element == [CChar] {
    /// Calls `body` with stable C pointers to every buffer.
    fileprivate func withPointers<R>(_ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafePointer<CChar>?] = []
        func recurse(_ index: Int) -> R {
            if index == count { return body(pointers) }
            return self[index].withUnsafeBufferPointer { buffer in
                pointers.append(buffer.baseAddress)
                return recurse(index + 1)
            }
        }
        return recurse(0)
    }
}
