import AgentFlowCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// Node records in a Redis shared by several signal servers, so any replica
/// can answer any node. Every change is one Lua script, atomic on the server.
///
/// Keys (all under `store.key_prefix`):
/// - `P:node:ID` — hash: `view` (JSON), `digest`, `observed`, `registered_at`; expires after 2×TTL as a backstop
/// - `P:seen` — sorted set: node id → last seen (Unix ms); eviction and counts read it
/// - `P:rev` — the registry revision (starts at the time in µs)
/// - `P:changes` — sorted set: `REV:ID` scored by revision (bounded), for `?since=` deltas
/// - `P:trimmed` — highest revision dropped from `P:changes`; older bases get a full list
public final class RedisRegistryStore: NodeRegistryStore {
    private let client: RedisClient
    private let prefix: String
    private let changeLogLimit: Int
    private let keyTTLMilliseconds: Int64

    public init(url: String, keyPrefix: String, ttl: Duration = .seconds(30), changeLogLimit: Int = 16_384) throws {
        client = try RedisClient(url: url)
        prefix = keyPrefix
        self.changeLogLimit = changeLogLimit
        keyTTLMilliseconds = max(2 * ttl.components.seconds * 1_000, 10_000)
    }

    private func nodeKey(_ id: String) -> String { "\(prefix):node:\(id)" }
    private var seenKey: String { "\(prefix):seen" }
    private var revKey: String { "\(prefix):rev" }
    private var changesKey: String { "\(prefix):changes" }
    private var trimmedKey: String { "\(prefix):trimmed" }

    /// Shared Lua: bump the revision, log the change, keep the log bounded.
    /// Expects KEYS[2..5] = seen, rev, changes, trimmed and the limit in `limit`.
    private static let recordChange = """
        local function record_change(id, limit)
          if redis.call('EXISTS', KEYS[3]) == 0 then
            -- A new (or flushed) registry starts at the time in µs, not 0, and no
            -- delta reaches back before it: a node's ?since= or ETag from an
            -- earlier registry gets the full list, never a wrong delta.
            local t = redis.call('TIME')
            local start = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
            redis.call('SET', KEYS[3], start)
            redis.call('SET', KEYS[5], start)
          end
          local rev = redis.call('INCR', KEYS[3])
          -- Revisions exceed Lua's 14-digit number formatting: always %d, never `..` on a number.
          redis.call('ZADD', KEYS[4], rev, string.format('%d', rev) .. ':' .. id)
          local excess = redis.call('ZCARD', KEYS[4]) - limit
          if excess > 0 then
            local old = redis.call('ZRANGE', KEYS[4], excess - 1, excess - 1, 'WITHSCORES')
            redis.call('SET', KEYS[5], old[2])
            redis.call('ZREMRANGEBYRANK', KEYS[4], 0, excess - 1)
          end
          return rev
        end

        """

    private static let registerScript = recordChange + """
        local digest = redis.call('HGET', KEYS[1], 'digest')
        local outcome = 'created'
        if digest then
          if ARGV[4] == '' or digest ~= ARGV[4] then return {'wrong_secret', 0} end
          outcome = 'replaced'
        else
          if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return {'full', 0} end
          redis.call('HSET', KEYS[1], 'registered_at', ARGV[10])
        end
        redis.call('HSET', KEYS[1], 'view', ARGV[2], 'digest', ARGV[3], 'observed', ARGV[9])
        redis.call('PEXPIRE', KEYS[1], ARGV[7])
        redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
        return {outcome, record_change(ARGV[1], tonumber(ARGV[8]))}
        """

    private static let heartbeatScript = recordChange + """
        local digest = redis.call('HGET', KEYS[1], 'digest')
        if not digest then return {'unknown', 0} end
        if digest ~= ARGV[2] then return {'wrong_secret', 0} end
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'observed') ~= ARGV[6] then
          redis.call('HSET', KEYS[1], 'observed', ARGV[6])
          return {'ok', record_change(ARGV[1], tonumber(ARGV[5]))}
        end
        return {'ok', tonumber(redis.call('GET', KEYS[3]) or '0')}
        """

    private static let deregisterScript = recordChange + """
        local digest = redis.call('HGET', KEYS[1], 'digest')
        if not digest then return {'unknown', 0} end
        if digest ~= ARGV[2] then return {'wrong_secret', 0} end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        return {'ok', record_change(ARGV[1], tonumber(ARGV[3]))}
        """

    /// KEYS[1] is unused here (no single node); ARGV: cutoff, limit, node key prefix.
    private static let evictScript = recordChange + """
        local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
        for _, id in ipairs(ids) do
          if redis.call('ZREM', KEYS[2], id) == 1 then
            redis.call('DEL', ARGV[3] .. id)
            record_change(id, tonumber(ARGV[2]))
          end
        end
        return ids
        """

    /// Returns {rev, full, id, view, observed, registered_at, digest, last_seen, ...}.
    private static let changesScript = """
        local rev = tonumber(redis.call('GET', KEYS[3]) or '0')
        local trimmed = tonumber(redis.call('GET', KEYS[5]) or '0')
        local since = tonumber(ARGV[1])
        local full = since == nil or since < trimmed or since > rev
        local ids = {}
        if full then
          ids = redis.call('ZRANGE', KEYS[2], 0, -1)
        else
          local seen = {}
          for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[1], '+inf')) do
            local id = string.match(entry, '^%d+:(.*)$')
            if id and not seen[id] then seen[id] = true; table.insert(ids, id) end
          end
        end
        local out = {rev, full and 1 or 0}
        for _, id in ipairs(ids) do
          local fields = redis.call('HMGET', ARGV[2] .. id, 'view', 'observed', 'registered_at', 'digest')
          local last = redis.call('ZSCORE', KEYS[2], id)
          table.insert(out, id)
          table.insert(out, fields[1] or '')
          table.insert(out, fields[2] or '')
          table.insert(out, fields[3] or '')
          table.insert(out, fields[4] or '')
          table.insert(out, last or '0')
        end
        return out
        """

    private func eval(_ script: String, nodeID: String, _ arguments: [String]) async throws -> RedisReply {
        try await client.command(["EVAL", script, "5", nodeKey(nodeID), seenKey, revKey, changesKey, trimmedKey] + arguments)
    }

    private static func outcome(_ reply: RedisReply) -> (String, UInt64) {
        let items = reply.arrayValue
        return (items.first?.stringValue ?? "", UInt64(items.dropFirst().first?.integerValue ?? 0))
    }

    public func register(_ node: StoredNode, presentedSecretDigest: String?, maxNodes: Int) async throws -> RegistrationOutcome {
        let view = try JSONEncoder().encode(node.view)
        let reply = try await eval(Self.registerScript, nodeID: node.view.nodeID, [
            node.view.nodeID, String(decoding: view, as: UTF8.self), node.secretDigest, presentedSecretDigest ?? "",
            String(node.lastSeenMillis), String(maxNodes), String(keyTTLMilliseconds), String(changeLogLimit),
            node.view.observedAddress ?? "", node.view.registeredAt,
        ])
        switch Self.outcome(reply) {
        case ("created", let revision): return .created(revision: revision)
        case ("replaced", let revision): return .replaced(revision: revision)
        case ("full", _): return .full
        default: return .wrongSecret
        }
    }

    public func heartbeat(nodeID: String, secretDigest: String, observedAddress: String?, now: Date) async throws -> HeartbeatOutcome {
        let reply = try await eval(Self.heartbeatScript, nodeID: nodeID, [
            nodeID, secretDigest, String(now.unixMillis), String(keyTTLMilliseconds), String(changeLogLimit), observedAddress ?? "",
        ])
        switch Self.outcome(reply) {
        case ("ok", let revision): return .refreshed(revision: revision)
        case ("unknown", _): return .unknownNode
        default: return .wrongSecret
        }
    }

    public func deregister(nodeID: String, secretDigest: String) async throws -> DeregisterOutcome {
        let reply = try await eval(Self.deregisterScript, nodeID: nodeID, [nodeID, secretDigest, String(changeLogLimit)])
        switch Self.outcome(reply) {
        case ("ok", let revision): return .removed(revision: revision)
        case ("unknown", _): return .unknownNode
        default: return .wrongSecret
        }
    }

    public func changes(since: UInt64?) async throws -> RegistryChanges {
        let reply = try await eval(Self.changesScript, nodeID: "-", [since.map(String.init) ?? "", "\(prefix):node:"])
        let items = reply.arrayValue
        guard items.count >= 2 else { throw RedisError("redis_error", "unexpected reply to the list script") }
        let revision = UInt64(items[0].integerValue ?? 0)
        let full = items[1].integerValue == 1
        var nodes: [StoredNode] = []
        var removed: [String] = []
        var index = 2
        let decoder = JSONDecoder()
        while index + 5 < items.count {
            let id = items[index].stringValue ?? ""
            let viewJSON = items[index + 1].stringValue ?? ""
            if viewJSON.isEmpty {
                removed.append(id)
            } else {
                var view = try decoder.decode(NodeView.self, from: Data(viewJSON.utf8))
                let observed = items[index + 2].stringValue ?? ""
                view.observedAddress = observed.isEmpty ? nil : observed
                if let registered = items[index + 3].stringValue, !registered.isEmpty { view.registeredAt = registered }
                nodes.append(StoredNode(
                    view: view, secretDigest: items[index + 4].stringValue ?? "",
                    lastSeenMillis: Int64(Double(items[index + 5].stringValue ?? "0") ?? 0)))
            }
            index += 6
        }
        nodes.sort { $0.view.nodeID < $1.view.nodeID }
        return RegistryChanges(revision: revision, full: full, nodes: nodes, removed: removed.sorted())
    }

    public func evict(lastSeenBefore deadline: Date) async throws -> [String] {
        let reply = try await eval(Self.evictScript, nodeID: "-", [String(deadline.unixMillis), String(changeLogLimit), "\(prefix):node:"])
        return reply.arrayValue.compactMap(\.stringValue)
    }

    public func secretDigest(of nodeID: String) async throws -> String? {
        try await client.command(["HGET", nodeKey(nodeID), "digest"]).stringValue
    }

    public func nodeCount() async throws -> Int {
        Int(try await client.command(["ZCARD", seenKey]).integerValue ?? 0)
    }

    public func revision() async throws -> UInt64 {
        UInt64(try await client.command(["GET", revKey]).integerValue ?? 0)
    }
}
