#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization
import WeftCore
import WeftTransport
import WeftWire

/// A client of a Weft cluster: routes each key's writes to the head of its shard's chain and
/// its reads to the tail, stamps requests with the shard-map epoch, and when a node answers
/// `wrongEpoch` (the map changed, or the node is not serving) fetches the newest map from the
/// nodes and tries again until the request's deadline. Errors that leave a write's fate unknown
/// (the connection broke after sending, a timeout) are not retried: they are thrown, as
/// `unavailable` or `timeout`, for the caller to decide.
public final class ClusterClient: Sendable {
    public struct Options: Sendable {
        /// Connections per node.
        public var connectionsPerNode: Int
        /// How long one operation may take, retries included.
        public var deadlineMs: Int64
        /// Per request sent to a node.
        public var requestTimeoutMs: Int64
        /// Values kept in the coherent cache; 0 turns the cache off.
        public var cacheEntriesMax: Int
        /// A put to a chain of two or more nodes asks the tail to answer it too (see `ReplyAt`):
        /// its answer comes one hop sooner than the head's, which the client then ignores.
        public var tailReplies: Bool
        public init(
            connectionsPerNode: Int = 1, deadlineMs: Int64 = 10_000, requestTimeoutMs: Int64 = 5_000, cacheEntriesMax: Int = 0,
            tailReplies: Bool = true
        ) {
            self.tailReplies = tailReplies
            self.cacheEntriesMax = cacheEntriesMax
            self.connectionsPerNode = connectionsPerNode
            self.deadlineMs = deadlineMs
            self.requestTimeoutMs = requestTimeoutMs
        }
    }

    public let options: Options
    private let seeds: [String]
    private let current = Mutex<ShardMap?>(nil)
    private let clients = Mutex<[String: WeftClient]>([:])
    private let refreshing = Mutex<Task<Void, Never>?>(nil)
    private let cache: ValueCache?
    private let closed = Atomic<Bool>(false)
    /// This client's id in `ReplyAt`s, its puts' numbers, and the puts waiting for an answer
    /// from either end of their chain (the first answer wins).
    private let clientID = UInt64.random(in: 1...UInt64.max)
    private let nextSeq = Atomic<UInt64>(0)
    private let replies = Mutex<[UInt64: ReplyWaiter]>([:])

    /// True once `close` was called: nothing is sent any more (watches end).
    public var isClosed: Bool { closed.load(ordering: .acquiring) }

    private init(seeds: [String], options: Options) {
        self.seeds = seeds
        self.options = options
        self.cache = options.cacheEntriesMax > 0 ? ValueCache(entriesMax: options.cacheEntriesMax) : nil
    }

    /// Connects to the cluster through any of `seeds` (HOST:PORT of nodes) and loads the map.
    public static func connect(seeds: [String], options: Options = Options()) async throws(WeftError) -> ClusterClient {
        guard !seeds.isEmpty else { throw WeftError(.invalidArgument, "no cluster node address given") }
        let client = ClusterClient(seeds: seeds, options: options)
        let deadline = ContinuousClock.now + .milliseconds(options.deadlineMs)
        while true {
            await client.refresh()
            if client.map != nil { return client }
            guard ContinuousClock.now < deadline else { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        await client.close()
        throw WeftError(.unavailable, "no node of \(seeds.joined(separator: ", ")) serves a shard map")
    }

    /// The shard map the client routes by.
    public var map: ShardMap? { current.withLock { $0 } }

    public func close() async {
        closed.store(true, ordering: .releasing)
        let all = clients.withLock { c in
            defer { c.removeAll() }
            return Array(c.values)
        }
        for c in all { await c.close() }
    }

    // MARK: routing

    func client(_ address: String) throws(WeftError) -> WeftClient {
        guard !isClosed else { throw WeftError(.cancelled, "the cluster client is closed") }
        if let c = clients.withLock({ $0[address] }) { return c }
        let (host, port) = try WeftClient.parseAddress(address)
        let made = WeftClient.lazy(
            host: host, port: port,
            options: .init(connections: options.connectionsPerNode, requestTimeoutMs: options.requestTimeoutMs, connectTimeoutMs: 1_000))
        if let cache { made.invalidationHandler.withLock { $0 = { key in cache.invalidate(key) } } }
        if options.tailReplies {
            made.commitFeed.withLock {
                $0 = (clientID, { [weak self] seq, version, length in
                    self?.replies.withLock { $0.removeValue(forKey: seq) }?.resume(.success(.state(.success(.written(version: version, length: length)))))
                })
            }
        }
        return clients.withLock { all in
            if let c = all[address] { return c }
            all[address] = made
            return made
        }
    }

    /// Asks the nodes for their maps and keeps the newest (one refresh at a time).
    public func refresh() async {
        let task: Task<Void, Never> = refreshing.withLock { r in
            if let running = r { return running }
            let t = Task { await self.fetchNewest() }
            r = t
            return t
        }
        await task.value
        refreshing.withLock { r in if r == task { r = nil } }
    }

    private func fetchNewest() async {
        var addresses = Set(seeds)
        if let m = map { addresses.formUnion(m.nodes.values.map(\.address)) }
        await withTaskGroup(of: ShardMap?.self) { group in
            for address in addresses {
                group.addTask {
                    guard let c = try? self.client(address),
                          case .shardMap(let epoch, let json)? = try? await c.send(.shardMap, epoch: 0, timeoutMs: Int64(1_000)),
                          epoch > 0
                    else { return nil }
                    return try? JSONDecoder().decode(ShardMap.self, from: Data(json))
                }
            }
            for await m in group {
                guard let m else { continue }
                current.withLock { c in if (c?.epoch ?? 0) < m.epoch { c = m } }
            }
        }
    }

    /// Waits, refreshing the map, until it is settled with `nodes` members (see
    /// `ShardMap.isSettled`); `timeout` if that takes longer than `timeoutMs`.
    public func awaitSettled(nodes: Int, timeoutMs: Int64) async throws(WeftError) {
        let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
        while true {
            await refresh()
            if map?.isSettled(nodes: nodes) == true { return }
            guard ContinuousClock.now < deadline else {
                throw WeftError(.timeout, "the cluster did not settle within \(timeoutMs) ms: \(String(describing: map))")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Runs `request` on the node `route` picks in the current map, refreshing the map and
    /// retrying on `wrongEpoch` (and, for reads, on `unavailable`) until the deadline.
    private func routed(
        _ request: ServerRequest, retryUnavailable: Bool, route: (ShardMap) -> String?
    ) async throws(WeftError) -> ClientResponse {
        let deadline = ContinuousClock.now + .milliseconds(options.deadlineMs)
        var delayMs = 5
        var lastError = WeftError(.unavailable, "no route")
        while true {
            if let m = map, let node = route(m), let address = m.address(of: node) {
                do throws(WeftError) {
                    let c = try client(address)
                    // A node that cannot be reached has not seen the request: try elsewhere.
                    try await c.ensureConnected()
                } catch {
                    lastError = error
                    guard ContinuousClock.now < deadline, !isClosed else { throw lastError }
                    try? await Task.sleep(for: .milliseconds(delayMs))
                    delayMs = min(delayMs * 2, 200)
                    await refresh()
                    continue
                }
                do throws(WeftError) {
                    let response = try await client(address).send(request, epoch: m.epoch, timeoutMs: nil)
                    if case .state(.failure(let e)) = response { throw e }
                    return response
                } catch {
                    lastError = error
                    switch error.code {
                    case .wrongEpoch: break
                    case .unavailable where retryUnavailable: break
                    case .unavailable, .timeout:
                        // The write's fate is unknown: not retried, but the map is refreshed
                        // (the node may have died) so that the caller's next try goes right.
                        await refresh()
                        throw error
                    default: throw error
                    }
                }
            }
            guard ContinuousClock.now < deadline else {
                throw lastError.code == .wrongEpoch ? WeftError(.unavailable, "cluster did not settle: \(lastError.message)") : lastError
            }
            try? await Task.sleep(for: .milliseconds(delayMs))
            delayMs = min(delayMs * 2, 200)
            await refresh()
        }
    }

    // MARK: the state API

    /// Runs a state operation on the right replica.
    public func execute(_ request: StateRequest) async throws(WeftError) -> StateResponse {
        switch request {
        case .get(let key, nil, nil) where cache != nil:
            return .value(try await get(key))
        case .get(let key, _, _):
            return try await unwrap(routed(.state(request), retryUnavailable: true) { $0.tail($0.shard(of: key)) })
        case .put(let key, _, _, _) where options.tailReplies:
            defer { cache?.remove(key) }
            if let response = try await putAnsweredAtTail(request, key: key) { return try unwrap(response) }
            return try await unwrap(routed(.state(request), retryUnavailable: false) { $0.head($0.shard(of: key)) })
        case .put(let key, _, _, _), .writeRange(let key, _, _, _), .append(let key, _, _), .add(let key, _), .delete(let key, _):
            defer { cache?.remove(key) }
            return try await unwrap(routed(.state(request), retryUnavailable: false) { $0.head($0.shard(of: key)) })
        case .list(let prefix, let after, let limit, let keysOnly):
            return try await list(prefix: prefix, after: after, limit: limit, keysOnly: keysOnly)
        case .status:
            return try await unwrap(routed(.state(request), retryUnavailable: true) { $0.nodes.keys.sorted().first })
        case .leaseGrant(let ttl, let id):
            // The id decides the lease's home shard, so the client picks it (anew if taken).
            var attempt = 0
            while true {
                let chosen = id != 0 ? id : LeaseID.random(in: 1...LeaseID.max)
                do throws(WeftError) {
                    return try await unwrap(routed(.state(.leaseGrant(ttlSeconds: ttl, id: chosen)), retryUnavailable: false) { $0.head($0.home(ofLease: chosen)) })
                } catch where id == 0 && attempt < 3 && error.code == .invalidArgument && error.message.hasSuffix("already exists") {
                    attempt += 1
                }
            }
        case .leaseKeepAlive(let id):
            return try await unwrap(routed(.state(request), retryUnavailable: true) { $0.head($0.home(ofLease: id)) })
        case .leaseRevoke(let id):
            return try await unwrap(routed(.state(request), retryUnavailable: false) { $0.head($0.home(ofLease: id)) })
        }
    }

    /// Sends a put to its chain's head asking the tail to answer too, and returns the first
    /// answer. nil when it was not sent that way or the head refused it for its epoch (the
    /// caller then routes it as any write, refreshing the map): the chain is one node, or the
    /// client is not connected to both ends yet (it starts connecting to the tail, for the
    /// next put).
    private func putAnsweredAtTail(_ request: StateRequest, key: String) async throws(WeftError) -> ClientResponse? {
        guard let m = map else { return nil }
        let s = m.shard(of: key)
        guard let head = m.head(s), let tail = m.tail(s), head != tail,
              let headAddress = m.address(of: head), let tailAddress = m.address(of: tail)
        else { return nil }
        let headClient = try client(headAddress)
        let tailClient = try client(tailAddress)
        guard headClient.isConnected, tailClient.isConnected else {
            if !tailClient.isConnected { tailClient.connectInBackground() }
            return nil
        }
        let seq = nextSeq.wrappingAdd(1, ordering: .relaxed).newValue
        let result: Result<ClientResponse, WeftError> = await withCheckedContinuation { cont in
            replies.withLock { $0[seq] = ReplyWaiter(cont) }
            headClient.submit(.state(request), epoch: m.epoch, timeoutMs: options.requestTimeoutMs, replyAt: ReplyAt(client: clientID, seq: seq)) { result in
                self.replies.withLock { $0.removeValue(forKey: seq) }?.resume(result)
            }
        }
        switch result {
        case .success(.state(.failure(let error))) where error.code == .wrongEpoch:
            return nil
        case .failure(let error) where error.code == .unavailable && !headClient.isConnected && error.message.hasPrefix("not connected"):
            return nil  // not sent: the connection closed before the put went out
        case .success(let response):
            return response
        case .failure(let error):
            // The write's fate is unknown (see `routed`): thrown, with the map refreshed.
            if error.code == .unavailable || error.code == .timeout { await refresh() }
            throw error
        }
    }

    private func unwrap(_ response: ClientResponse) throws(WeftError) -> StateResponse {
        switch response {
        case .state(let result): return try result.get()
        case .status(let s, _): return .status(s)
        default: throw WeftError(.malformedRequest, "unexpected response kind")
        }
    }

    /// A list over every shard: each tail lists the shards it serves; the pages are merged.
    private func list(prefix: String, after: String?, limit: Int, keysOnly: Bool) async throws(WeftError) -> StateResponse {
        let deadline = ContinuousClock.now + .milliseconds(options.deadlineMs)
        while true {
            guard let m = map else { throw WeftError(.unavailable, "no shard map") }
            let tails = Set((0..<m.shardCount).compactMap { m.tail($0) })
            var pages: [(entries: [KeyValue], more: Bool, revision: Revision)] = []
            var failure: WeftError?
            for node in tails {
                guard let address = m.address(of: node) else { continue }
                do throws(WeftError) {
                    let r = try await client(address).send(.state(.list(prefix: prefix, after: after, limit: limit, keysOnly: keysOnly)), epoch: m.epoch, timeoutMs: nil)
                    guard case .state(let result) = r else { throw WeftError(.malformedRequest, "unexpected response kind") }
                    guard case .list(let entries, let more, let revision) = try result.get() else { throw WeftError(.malformedRequest, "unexpected response") }
                    pages.append((entries, more, revision))
                } catch {
                    failure = error
                    break
                }
            }
            if let failure {
                guard failure.code == .wrongEpoch || failure.code == .unavailable, ContinuousClock.now < deadline else { throw failure }
                try? await Task.sleep(for: .milliseconds(20))
                await refresh()
                continue
            }
            var all = pages.flatMap(\.entries)
            all.sort { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
            let more = all.count > limit || pages.contains { $0.more }
            return .list(entries: Array(all.prefix(limit)), more: more, revision: pages.map(\.revision).max() ?? 0)
        }
    }

    /// Reads a key; with the cache on, from the cache while its lease runs.
    public func get(_ key: String) async throws(WeftError) -> KeyValue {
        if let cache {
            if let hit = cache.lookup(key) { return hit }
            let sentAt = ContinuousClock.now
            let generation = cache.currentGeneration
            let response = try await routed(.cacheGet(key: key), retryUnavailable: true) { $0.tail($0.shard(of: key)) }
            guard case .cachedValue(let kv, let leaseMs) = response else { throw WeftError(.malformedRequest, "unexpected response") }
            // Cache for less than the lease: counted from before the request left, minus 10%.
            if leaseMs > 0 { cache.store(kv, until: sentAt + .milliseconds(Int64(leaseMs) * 9 / 10), readGeneration: generation) }
            return kv
        }
        guard case .value(let kv) = try await execute(.get(key: key)) else { throw WeftError(.malformedRequest, "unexpected response") }
        return kv
    }

    /// Values in the cache now.
    public var cachedCount: Int { cache?.count ?? 0 }

    /// Puts a value; with `ifVersion` only if the key's version matches (0 = create only).
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], ifVersion: Revision? = nil) async throws(WeftError) -> Revision {
        guard case .written(let v, _) = try await execute(.put(key: key, value: value, ifVersion: ifVersion)) else {
            throw WeftError(.malformedRequest, "unexpected response")
        }
        return v
    }

    @discardableResult
    public func delete(_ key: String, ifVersion: Revision? = nil) async throws(WeftError) -> Revision {
        guard case .deleted(let r, _) = try await execute(.delete(key: key, ifVersion: ifVersion)) else {
            throw WeftError(.malformedRequest, "unexpected response")
        }
        return r
    }

    public func add(_ key: String, _ delta: Int64) async throws(WeftError) -> (value: Int64, version: Revision) {
        guard case .counter(let value, let version) = try await execute(.add(key: key, delta: delta)) else {
            throw WeftError(.malformedRequest, "unexpected response")
        }
        return (value, version)
    }
}

/// A put waiting for its first answer (the head's or the tail's): resumed once, by whoever
/// removes it from the client's table.
final class ReplyWaiter: Sendable {
    private let continuation: CheckedContinuation<Result<ClientResponse, WeftError>, Never>
    init(_ continuation: CheckedContinuation<Result<ClientResponse, WeftError>, Never>) { self.continuation = continuation }
    func resume(_ result: Result<ClientResponse, WeftError>) { continuation.resume(returning: result) }
}
