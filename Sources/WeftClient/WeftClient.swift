import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftCore
import WeftTransport
import WeftWire

/// A client of a Weft state server: a small pool of TCP connections, many requests in flight
/// on each (pipelining), typed errors with stable codes. Safe to share between tasks.
public final class WeftClient: Sendable {
    public struct Options: Sendable {
        /// Connections in the pool; requests are spread round-robin.
        public var connections: Int
        /// How long a request may wait for its answer before failing with `timeout`.
        public var requestTimeoutMs: Int64
        /// How long connecting may take before failing with `unavailable`.
        public var connectTimeoutMs: Int64
        /// Events a watch buffers for a slow consumer before it ends with `compacted`.
        public var watchBufferMax: Int
        /// Memory shared with the server (a function instance's arena, shared with its worker):
        /// large put values and get answers travel through it instead of the socket. Only for
        /// a single connection to that server (`connect(transport:)`).
        public var arena: SharedArena?
        /// Connected to a cluster node: values the routing client keeps in its coherent cache
        /// (see `ClusterClient.Options.cacheEntriesMax`); 0, the default, keeps none.
        public var clusterCacheEntriesMax: Int

        public init(
            connections: Int = 1, requestTimeoutMs: Int64 = 30_000, connectTimeoutMs: Int64 = 5_000, watchBufferMax: Int = 100_000,
            arena: SharedArena? = nil, clusterCacheEntriesMax: Int = 0
        ) {
            self.connections = max(1, connections)
            self.requestTimeoutMs = requestTimeoutMs
            self.connectTimeoutMs = connectTimeoutMs
            self.watchBufferMax = watchBufferMax
            self.arena = arena
            self.clusterCacheEntriesMax = clusterCacheEntriesMax
        }
    }

    public let host: String
    public let port: Int
    public let options: Options
    /// How this client reaches the server: TCP unless told otherwise.
    public let transport: any ClientTransport
    /// The client made its transport (negotiated), so `close` shuts it down.
    private let ownsTransport: Bool
    private let slots: [SessionSlot]
    /// Set when the server is a cluster node (see `connect(address:...)`).
    let router = Mutex<ClusterClient?>(nil)
    /// Called when a server tells this client to drop a cached key (set before connecting).
    let invalidationHandler = Mutex<(@Sendable (String) -> Void)?>(nil)
    /// What new connections do with commit notices, and the client id they name (a cluster
    /// client's, see `ReplyAt`); set before the first connection.
    let commitFeed = Mutex<(client: UInt64, handler: @Sendable (_ seq: UInt64, _ version: Revision, _ length: UInt64) -> Void)?>(nil)
    private let next = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)
    /// A `connectInBackground` attempt is under way.
    private let connectingInBackground = Atomic<Bool>(false)

    private init(host: String, port: Int, options: Options, transport: any ClientTransport, ownsTransport: Bool) {
        self.host = host
        self.port = port
        self.options = options
        self.transport = transport
        self.ownsTransport = ownsTransport
        self.slots = (0..<options.connections).map { _ in SessionSlot() }
    }

    /// A client that connects lazily (on first use, or `ensureConnected`), over TCP.
    public static func lazy(host: String, port: Int, options: Options = Options()) -> WeftClient {
        WeftClient(
            host: host, port: port, options: options,
            transport: TCPClientTransport(group: MultiThreadedEventLoopGroup.singleton), ownsTransport: false)
    }

    /// Connects the pool (every connection, so a wrong address fails here). The transport is TCP
    /// on `group` unless `transport` names another.
    public static func connect(
        host: String, port: Int, connections: Int = 1, options: Options? = nil,
        group: (any EventLoopGroup)? = nil, transport: (any ClientTransport)? = nil
    ) async throws(WeftError) -> WeftClient {
        try await connect(host: host, port: port, connections: connections, options: options, group: group, transport: transport, ownsTransport: false)
    }

    private static func connect(
        host: String, port: Int, connections: Int, options: Options?,
        group: (any EventLoopGroup)?, transport: (any ClientTransport)?, ownsTransport: Bool
    ) async throws(WeftError) -> WeftClient {
        var opts = options ?? Options()
        if options == nil { opts.connections = max(1, connections) }
        let client = WeftClient(
            host: host, port: port, options: opts,
            transport: transport ?? TCPClientTransport(group: group ?? MultiThreadedEventLoopGroup.singleton),
            ownsTransport: ownsTransport)
        do {
            for i in 0..<opts.connections {
                _ = try await client.session(slot: i)
            }
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// Connects over a transport that needs no address, such as `ConnectedSocketTransport` (the
    /// socket a function instance inherits): one connection, which is not replaced once it ends.
    public static func connect(transport: any ClientTransport, options: Options = Options()) async throws(WeftError) -> WeftClient {
        var opts = options
        opts.connections = 1
        return try await connect(host: "", port: 0, connections: 1, options: opts, group: nil, transport: transport, ownsTransport: false)
    }

    /// Connects to "host:port" with the transport `request` asks for (see `negotiate`).
    public static func connect(
        address: String, connections: Int = 1, options: Options? = nil,
        transport request: TransportRequest, provider: String? = nil
    ) async throws(WeftError) -> WeftClient {
        let route = try await negotiate(address: address, request: request, provider: provider)
        let client: WeftClient
        do {
            client = try await connect(
                host: route.host, port: route.port, connections: connections, options: options, group: nil,
                transport: route.transport, ownsTransport: true)
        } catch {
            route.transport.shutdown()
            throw error
        }
        // A cluster node: state operations are routed by the shard map from here on.
        if let (_, info) = try? await client.status(), !info.cluster.isEmpty {
            do {
                client.router.withLock { $0 = nil }
                let router = try await ClusterClient.connect(seeds: [address], options: .init(cacheEntriesMax: options?.clusterCacheEntriesMax ?? 0))
                client.router.withLock { $0 = router }
            } catch {
                await client.close()
                throw error
            }
        }
        return client
    }

    /// True when this client routes state operations over a cluster's shard map.
    public var isClustered: Bool { router.withLock { $0 != nil } }

    /// The routing client this client sends through when it is connected to a cluster.
    public var cluster: ClusterClient? { router.withLock { $0 } }

    /// Where and how to reach a server.
    public struct Route: Sendable {
        public var host: String
        public var port: Int
        /// Open links with this; the caller owns it (`shutdown` when done).
        public var transport: any ClientTransport
        public init(host: String, port: Int, transport: any ClientTransport) {
            self.host = host
            self.port = port
            self.transport = transport
        }
    }

    /// Picks the transport to a server. `tcp` connects there directly. Anything else first asks
    /// the server over TCP which transports it listens on, then takes its libfabric listener (on
    /// the provider the server uses) when the request wants it: `fabric` and `rdma` insist (an
    /// error if the server offers none), `auto` does so only where libibverbs finds an RDMA device
    /// and otherwise stays on TCP.
    public static func negotiate(address: String, request: TransportRequest, provider: String? = nil) async throws(WeftError) -> Route {
        let (host, port) = try parseAddress(address)
        let tcp = Route(host: host, port: port, transport: TCPClientTransport())
        let decision = try request.decide(provider: provider)
        guard decision.fabricProvider != nil else { return tcp }
        let bootstrap = try await connect(host: host, port: port, connections: 1)
        let info: ServerInfo
        do {
            (_, info) = try await bootstrap.status()
        } catch {
            await bootstrap.close()
            throw error
        }
        await bootstrap.close()
        guard let offered = info.listeners.first(where: { $0.transport == "fabric" }) else {
            if decision.fallBackToTCP { return tcp }
            let offers = info.listeners.map { "\($0.transport) \($0.address)" }.joined(separator: ", ")
            throw WeftError(.unavailable, "the server at \(address) has no libfabric listener (it offers \(offers.isEmpty ? "tcp" : offers))")
        }
        let (fabricHost, fabricPort) = try parseAddress(offered.address)
        do {
            let stack = offered.provider.isEmpty ? decision.fabricProvider : offered.provider
            let fabric = try FabricClientTransport(options: .init(provider: stack), logger: Logger(label: "weft.client.fabric"))
            return Route(host: fabricHost, port: fabricPort, transport: fabric)
        } catch {
            if decision.fallBackToTCP { return tcp }
            throw error
        }
    }

    /// Connects to "host:port".
    public static func connect(address: String, connections: Int = 1) async throws(WeftError) -> WeftClient {
        let (host, port) = try parseAddress(address)
        return try await connect(host: host, port: port, connections: connections)
    }

    /// Splits "HOST:PORT" ("[v6]:PORT" too; an empty host means 127.0.0.1). Port 0 ("any free
    /// port") is accepted only where a server binds, with `allowAnyPort`.
    public static func parseAddress(_ address: String, allowAnyPort: Bool = false) throws(WeftError) -> (String, Int) {
        let lowest = allowAnyPort ? 0 : 1
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (lowest...65535).contains(port) else {
            throw WeftError(.invalidArgument, "address '\(address)' is not HOST:PORT")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }

    /// Closes every connection; requests in flight fail with `unavailable`.
    public func close() async {
        if let router = router.withLock({ r in defer { r = nil }; return r }) { await router.close() }
        closed.store(true, ordering: .relaxed)
        for slot in slots {
            let session = slot.session.withLock { c in
                defer { c = nil }
                return c
            }
            session?.close()
        }
        if ownsTransport { transport.shutdown() }
    }

    // MARK: connections

    private func session(slot: Int) async throws(WeftError) -> ClientSession {
        if let s = slots[slot].session.withLock({ $0 }), s.isOpen { return s }
        guard !closed.load(ordering: .relaxed) else { throw WeftError(.unavailable, "client is closed") }
        let made = Mutex<ClientSession?>(nil)
        let link = try await transport.connect(host: host, port: port, timeoutMs: options.connectTimeoutMs) { link in
            made.withLock {
                let feed = self.commitFeed.withLock { $0 }
                let pushes = ServerPushes(
                    onInvalidate: self.invalidationHandler.withLock { $0 }, onCommitted: feed?.handler, commitFeedClient: feed?.client)
                $0 = ClientSession.attach(to: link, pushes: pushes, arena: self.options.arena)
            }
        }
        guard let fresh = made.withLock({ $0 }) else {
            link.close()
            throw WeftError(.internalError, "transport \(transport.name) did not set up the connection")
        }
        let winner: ClientSession = slots[slot].session.withLock { c in
            if let existing = c, existing.isOpen { return existing }
            c = fresh
            return fresh
        }
        if winner !== fresh { fresh.close() }
        return winner
    }

    private func pickSession() async throws(WeftError) -> ClientSession {
        let n = slots.count
        let i = n == 1 ? 0 : next.wrappingAdd(1, ordering: .relaxed).oldValue % n
        return try await session(slot: i < 0 ? -i : i)
    }

    /// Sends a request and waits for its answer, up to `timeoutMs` (the request timeout by
    /// default; `Int64.max` waits as long as the connection lives, e.g. for a long poll).
    func send(_ request: ServerRequest, timeoutMs: Int64? = nil, epoch: UInt64 = 0) async throws(WeftError) -> ClientResponse {
        let session = try await pickSession()
        let promise = session.eventLoop.makePromise(of: ClientResponse.self)
        let wait = timeoutMs ?? options.requestTimeoutMs
        let deadline = wait >= Int64.max / 1_000_000 ? NIODeadline.distantFuture : NIODeadline.now() + .milliseconds(wait)
        session.submit(OutboundRequest(request: request, reply: .unary(promise), deadline: deadline, epoch: epoch))
        do {
            return try await promise.futureResult.get()
        } catch let e as WeftError {
            throw e
        } catch {
            throw WeftError(.unavailable, "\(error)")
        }
    }

    /// Sends any request stamped with a shard-map epoch and waits for its answer (cluster routing).
    public func send(_ request: ServerRequest, epoch: UInt64, timeoutMs: Int64? = nil) async throws(WeftError) -> ClientResponse {
        try await send(request, timeoutMs: timeoutMs, epoch: epoch)
    }

    /// Opens the first connection if it is not open (for `submit`).
    public func ensureConnected() async throws(WeftError) {
        _ = try await session(slot: 0)
    }

    /// Starts opening the first connection in the background, unless an attempt is under way
    /// (a dead node would otherwise get one per caller). After a failed attempt the next may
    /// start `pauseAfterFailureMs` later; `failed` hears why it failed.
    public func connectInBackground(pauseAfterFailureMs: Int64 = 0, failed: @escaping @Sendable (WeftError) -> Void = { _ in }) {
        guard !connectingInBackground.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Task {
            do throws(WeftError) {
                try await self.ensureConnected()
            } catch {
                failed(error)
                if pauseAfterFailureMs > 0 { try? await Task.sleep(for: .milliseconds(pauseAfterFailureMs)) }
            }
            self.connectingInBackground.store(false, ordering: .releasing)
        }
    }

    /// An executor on the event loop of the first connection (opening it if needed). Tasks that
    /// prefer it (`Task(executorPreference:)`) send their requests and resume with the answers
    /// on that one thread: two thread hand-offs fewer per request, the lowest latency a caller
    /// that awaits one request at a time can get. Keep long computations off it (see
    /// `LoopExecutor`).
    public func connectionExecutor() async throws(WeftError) -> LoopExecutor {
        LoopExecutor(try await session(slot: 0).eventLoop)
    }

    /// True while the first connection is open.
    public var isConnected: Bool { slots[0].session.withLock { $0?.isOpen ?? false } }

    /// Sends a request on the first connection without waiting. Requests submitted one after
    /// another (from one thread, or under one lock) go out in that order. Without an open
    /// connection it fails at once with `unavailable` (see `ensureConnected`).
    public func submit(
        _ request: ServerRequest, epoch: UInt64, timeoutMs: Int64, replyAt: ReplyAt? = nil,
        completion: @escaping @Sendable (Result<ClientResponse, WeftError>) -> Void
    ) {
        guard let session = slots[0].session.withLock({ $0 }), session.isOpen else {
            completion(.failure(WeftError(.unavailable, "not connected to \(host):\(port)")))
            return
        }
        let promise = session.eventLoop.makePromise(of: ClientResponse.self)
        promise.futureResult.whenComplete { result in
            switch result {
            case .success(let r): completion(.success(r))
            case .failure(let e as WeftError): completion(.failure(e))
            case .failure(let e): completion(.failure(WeftError(.unavailable, "\(e)")))
            }
        }
        session.submit(OutboundRequest(
            request: request, reply: .unary(promise), deadline: NIODeadline.now() + .milliseconds(timeoutMs), epoch: epoch, replyAt: replyAt))
    }

    // MARK: the state API

    /// Runs any state operation and returns its response.
    public func execute(_ request: StateRequest) async throws(WeftError) -> StateResponse {
        if let router = router.withLock({ $0 }), request != .status { return try await router.execute(request) }
        switch try await send(.state(request)) {
        case .state(let result): return try result.get()
        case .status(let s, _): return .status(s)
        default: throw WeftError(.malformedRequest, "unexpected response kind")
        }
    }

    /// Reads a key (`notFound` if absent).
    public func get(_ key: String) async throws(WeftError) -> KeyValue {
        guard case .value(let kv) = try await execute(.get(key: key)) else { throw unexpected() }
        return kv
    }

    /// Reads `length` bytes at `offset` of a key's value.
    public func get(_ key: String, offset: UInt64, length: UInt64) async throws(WeftError) -> KeyValue {
        guard case .value(let kv) = try await execute(.get(key: key, range: ByteRange(offset: offset, length: length))) else { throw unexpected() }
        return kv
    }

    /// Reads a key only if its version is newer than `version`; nil when it has not changed.
    public func getIfChanged(_ key: String, since version: Revision) async throws(WeftError) -> KeyValue? {
        switch try await execute(.get(key: key, ifChangedSince: version)) {
        case .value(let kv): return kv
        case .notModified: return nil
        default: throw unexpected()
        }
    }

    /// Writes a value; `ifVersion` makes it conditional (0 = create only). Returns the new version.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], ifVersion: Revision? = nil, lease: LeaseID = 0) async throws(WeftError) -> Revision {
        guard case .written(let v, _) = try await execute(.put(key: key, value: value, ifVersion: ifVersion, lease: lease)) else { throw unexpected() }
        return v
    }

    @discardableResult
    public func put(_ key: String, _ value: String, ifVersion: Revision? = nil, lease: LeaseID = 0) async throws(WeftError) -> Revision {
        try await put(key, Array(value.utf8), ifVersion: ifVersion, lease: lease)
    }

    @discardableResult
    public func writeRange(_ key: String, offset: UInt64, _ bytes: [UInt8], ifVersion: Revision? = nil) async throws(WeftError) -> Revision {
        guard case .written(let v, _) = try await execute(.writeRange(key: key, offset: offset, bytes: bytes, ifVersion: ifVersion)) else { throw unexpected() }
        return v
    }

    @discardableResult
    public func append(_ key: String, _ bytes: [UInt8], ifVersion: Revision? = nil) async throws(WeftError) -> Revision {
        guard case .written(let v, _) = try await execute(.append(key: key, bytes: bytes, ifVersion: ifVersion)) else { throw unexpected() }
        return v
    }

    /// Adds to a 64-bit counter; returns its new value and version.
    @discardableResult
    public func add(_ key: String, _ delta: Int64) async throws(WeftError) -> (value: Int64, version: Revision) {
        guard case .counter(let value, let version) = try await execute(.add(key: key, delta: delta)) else { throw unexpected() }
        return (value, version)
    }

    /// Deletes a key (optionally only at `ifVersion`); returns the revision of the delete.
    @discardableResult
    public func delete(_ key: String, ifVersion: Revision? = nil) async throws(WeftError) -> Revision {
        guard case .deleted(let rev, _) = try await execute(.delete(key: key, ifVersion: ifVersion)) else { throw unexpected() }
        return rev
    }

    public struct ListPage: Sendable {
        public var entries: [KeyValue]
        public var more: Bool
        public var revision: Revision
    }

    /// One page of keys under `prefix`, strictly after `after`.
    public func list(prefix: String, after: String? = nil, limit: Int = 1000, keysOnly: Bool = false) async throws(WeftError) -> ListPage {
        guard case .list(let entries, let more, let revision) = try await execute(.list(prefix: prefix, after: after, limit: limit, keysOnly: keysOnly)) else { throw unexpected() }
        return ListPage(entries: entries, more: more, revision: revision)
    }

    /// Every key under `prefix`, page by page (bounded by `max`).
    public func listAll(prefix: String, keysOnly: Bool = false, max: Int = 1_000_000) async throws(WeftError) -> [KeyValue] {
        var all: [KeyValue] = []
        var after: String? = nil
        while all.count < max {
            let page = try await list(prefix: prefix, after: after, limit: min(1000, max - all.count), keysOnly: keysOnly)
            all += page.entries
            guard page.more, let last = page.entries.last else { break }
            after = last.key
        }
        return all
    }

    /// Grants a lease; keys put with it vanish when it ends.
    public func grantLease(ttlSeconds: Int64) async throws(WeftError) -> LeaseID {
        guard case .lease(let id, _) = try await execute(.leaseGrant(ttlSeconds: ttlSeconds)) else { throw unexpected() }
        return id
    }

    public func keepAlive(lease: LeaseID) async throws(WeftError) {
        guard case .lease = try await execute(.leaseKeepAlive(id: lease)) else { throw unexpected() }
    }

    @discardableResult
    public func revoke(lease: LeaseID) async throws(WeftError) -> Int {
        guard case .leaseRevoked(_, let n) = try await execute(.leaseRevoke(id: lease)) else { throw unexpected() }
        return n
    }

    /// The server's counters and identity.
    public func status() async throws(WeftError) -> (StoreStatus, ServerInfo) {
        guard case .status(let s, let info) = try await send(.state(.status)) else {
            throw WeftError(.malformedRequest, "unexpected response kind")
        }
        return (s, info)
    }

    /// Watches a key or prefix from `fromRevision` (nil = from now). Returns once the server
    /// has registered the watch, so no later change is missed. On a cluster, the watch follows
    /// each shard at its tail (see `ClusterClient.watch`).
    public func watch(_ target: WatchTarget, fromRevision: Revision? = nil, keysOnly: Bool = false) async throws(WeftError) -> WeftWatch {
        if let router = router.withLock({ $0 }) {
            return try await router.watch(target, fromRevision: fromRevision, keysOnly: keysOnly)
        }
        return try await watch(target, fromRevision: fromRevision, keysOnly: keysOnly, shard: nil)
    }

    /// A watch on this server only; `shard` restricts a prefix watch to one shard (a cluster
    /// node serves prefix watches of the shards it is the tail of only this way).
    func watch(_ target: WatchTarget, fromRevision: Revision?, keysOnly: Bool, shard: Int?) async throws(WeftError) -> WeftWatch {
        let watch = WeftWatch.make(bufferMax: options.watchBufferMax)
        let stream = watch.stream
        let session = try await pickSession()
        session.submit(
            OutboundRequest(request: .watch(target: target, fromRevision: fromRevision, keysOnly: keysOnly, shard: shard), reply: .watch(stream), deadline: .distantFuture))
        do {
            try await stream.waitCreated()
        } catch let e as WeftError {
            throw e
        } catch {
            throw WeftError(.unavailable, "\(error)")
        }
        return watch
    }

    private func unexpected() -> WeftError {
        WeftError(.malformedRequest, "unexpected response kind from the server")
    }
}

/// One pooled connection, replaced when it dies.
final class SessionSlot: Sendable {
    let session = Mutex<ClientSession?>(nil)
}
