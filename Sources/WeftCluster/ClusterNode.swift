import Foundation
import Logging
import Synchronization
import WeftCore

/// A Weft node in a cluster: its store (each shard it replicates), chain replication, and its
/// life in etcd — membership under a lease, the shard map it serves by, copy reports and, when
/// elected, the coordinator. Serve `gate` with the node's `StateServer`.
///
/// etcd keys, under `/weft/<cluster>/`: `nodes/<id>` (a member, under its lease), `map` (the
/// shard map), `copied/<id>/<shard>` (copy reports), `acks/<id>` (the epoch a node serves by),
/// `coordinator` (the election).
public final class ClusterNode: Sendable {
    public struct Options: Sendable {
        public var etcd: [String]
        public var cluster: String
        public var id: String
        /// Where other nodes and clients reach this node's state protocol.
        public var advertise: String
        public var http: String
        public var shardCount: Int
        public var replicas: Int
        public var leaseTTLSeconds: Int64
        /// How long a client may cache a value read from a tail (0: no caching).
        public var cacheLeaseMs: Int64
        /// When this node, as a chain's head, lets the tail answer puts that ask for it.
        public var tailReplies: TailReplies

        public init(
            etcd: [String], cluster: String = "weft", id: String, advertise: String, http: String = "",
            shardCount: Int = 64, replicas: Int = 3, leaseTTLSeconds: Int64 = 2, cacheLeaseMs: Int64 = 1_000,
            tailReplies: TailReplies = .auto
        ) {
            self.tailReplies = tailReplies
            self.cacheLeaseMs = cacheLeaseMs
            self.etcd = etcd
            self.cluster = cluster
            self.id = id
            self.advertise = advertise
            self.http = http
            self.shardCount = shardCount
            self.replicas = replicas
            self.leaseTTLSeconds = leaseTTLSeconds
        }
    }

    struct State {
        var session: EtcdSession?
        var tasks: [Task<Void, Never>] = []
        var stopped = false
        var coordinator = false
        /// The lease of a membership this node gave up (`rejoin`): it serves nothing by it.
        var abandonedLease: Int64 = 0
    }

    public let options: Options
    public let store: MemoryStore
    public let gate: NodeGate
    let replication: Replication
    let leases: ClusterLeases
    let etcd: EtcdClient
    let logger: Logger
    private let state = Mutex(State())
    private let peers: PeerPool
    private var prefix: String { "/weft/\(options.cluster)/" }

    /// Connects to etcd and builds the node's store; `start` then joins the cluster.
    /// `durable`: the local change log (LMDB) and what it recovered.
    public init(options: Options, limits: StoreLimits = .default, durable: (any ChangeLog)? = nil, recovered: RecoveredState? = nil, logger: Logger) async throws(WeftError) {
        precondition(options.shardCount >= 1 && options.replicas >= 1, "invalid cluster options")
        self.options = options
        self.logger = logger
        self.etcd = try await EtcdClient.connect(endpoints: options.etcd, requestTimeoutMs: max(1000, options.leaseTTLSeconds * 1000 / 2), logger: logger)
        let peers = PeerPool(timeoutMs: 5_000, logger: logger)
        self.peers = peers
        let box = WeakNode()
        let replication = Replication(
            me: options.id, shardCount: options.shardCount, inner: durable, peers: peers, cacheLeaseMs: options.cacheLeaseMs,
            membershipLeftMs: { box.node?.servingLeftMs ?? 0 }, logger: logger)
        self.replication = replication
        let store = MemoryStore(limits: limits, shardCount: options.shardCount, changeLog: replication, recovered: recovered)
        // Leases of recovered keys are the cluster's: their home shards' heads keep them.
        store.adoptAllLeases()
        replication.attach(store)
        self.store = store
        let leases = ClusterLeases(me: options.id, store: store, peers: peers, logger: logger, map: { box.node?.gate.map })
        self.leases = leases
        self.gate = NodeGate(
            me: options.id, store: store, replication: replication, leases: leases, tailReplies: options.tailReplies, logger: logger,
            serving: { box.node?.isServingFast ?? false },
            stale: { _ in box.node?.refreshMap() },
            copied: { shard, since in box.node?.reportCopied(shard: shard, since: since) },
            broken: { shard, incarnation, reason in box.node?.rejoin(shard: shard, incarnation: incarnation, reason: reason) })
        box.node = self
    }

    /// True while the node's membership lease is surely valid and the map it serves by knows
    /// this life of it (after losing its lease and registering again, a node serves nothing
    /// until the coordinator has published a map that took it out of its old chains).
    public var isServing: Bool { servingDeadlineMs() > 0 }

    /// Until when (monotonic ms) the node surely serves: its lease's validity while the map
    /// knows this life of it, 0 otherwise. Kept by `refreshServing` (on every pump tick and
    /// membership change) so that each request pays one clock read, not three locks.
    private let servingUntilMs = Atomic<Int64>(0)

    var isServingFast: Bool { EtcdSession.monotonicNowMs() < servingUntilMs.load(ordering: .acquiring) }

    /// How long (ms) the node surely serves from now; 0 or less when it does not.
    var servingLeftMs: Int64 { servingUntilMs.load(ordering: .acquiring) - EtcdSession.monotonicNowMs() }

    func refreshServing() {
        servingUntilMs.store(servingDeadlineMs(), ordering: .releasing)
    }

    /// The lease's validity deadline while the node serves by a map that knows this life of
    /// it; 0 when it does not serve.
    private func servingDeadlineMs() -> Int64 {
        state.withLock { s in
            guard !s.stopped, let session = s.session, session.isValid, session.leaseID != s.abandonedLease,
                  gate.map?.nodes[options.id]?.incarnation == session.leaseID else { return 0 }
            return session.validUntilMs
        }
    }

    /// True while this node is the elected coordinator.
    public var isCoordinator: Bool { state.withLock { $0.coordinator } }

    /// Registers in etcd, adopts the current map, and starts the background work: the session,
    /// the map watch, the coordinator election, the replication pump.
    /// etcd that is slow or not up yet (a cluster whose pods start in any order, a loaded
    /// machine) is waited for: unavailable and timeout errors are retried until `joinTimeoutMs`
    /// has passed; other errors end the start at once.
    public func start(joinTimeoutMs: Int64 = 60_000) async throws(WeftError) {
        let deadline = ContinuousClock.now + .milliseconds(joinTimeoutMs)
        var session: EtcdSession?
        while session == nil {
            do {
                session = try await register()
                try await loadMap(atStart: true)
            } catch {
                if let failed = session {
                    // Registered but the map read failed: leave this incarnation (and register
                    // anew, if trying again).
                    await failed.close()
                    session = nil
                }
                guard error.code == .unavailable || error.code == .timeout, ContinuousClock.now < deadline else { throw error }
                logger.warning("cannot join the cluster yet; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(300))
            }
        }
        guard let session else { throw WeftError(.internalError, "no session after joining") }
        let tasks = [
            Task { await self.keepMembership(session) },
            Task { await self.watchMap() },
            Task { await self.runElection() },
            Task { await self.pumpLoop() },
        ]
        state.withLock { $0.tasks = tasks }
    }

    /// Leaves the cluster: revokes the lease (the coordinator then moves the node's shards).
    public func stop() async {
        servingUntilMs.store(0, ordering: .releasing)
        let (tasks, session) = state.withLock { s in
            s.stopped = true
            return (s.tasks, s.session)
        }
        for t in tasks { t.cancel() }
        await session?.close()
        await peers.close()
        await etcd.close()
    }

    // MARK: membership

    private func register() async throws(WeftError) -> EtcdSession {
        let session = try await EtcdSession.start(client: etcd, ttlSeconds: options.leaseTTLSeconds, logger: logger)
        let node = ShardMap.Node(address: options.advertise, http: options.http, incarnation: session.leaseID)
        try await etcd.put(prefix + "nodes/" + options.id, Self.json(node), lease: session.leaseID)
        state.withLock { $0.session = session }
        logger.info("joined the cluster", metadata: ["node": "\(options.id)", "lease": "\(session.leaseID)"])
        return session
    }

    /// When the lease is lost the node stops serving (the coordinator drops it from its chains)
    /// and registers again as a new incarnation, to be copied in afresh.
    private func keepMembership(_ first: EtcdSession) async {
        var session = first
        while !Task.isCancelled {
            await session.lost()
            servingUntilMs.store(0, ordering: .releasing)
            // What this node holds now may include writes of its old life that never committed,
            // and state in flight: from now on it is copied in whole, never by delta.
            replication.forbidDeltaCatchUp()
            if Task.isCancelled || state.withLock({ $0.stopped }) { return }
            logger.warning("cluster membership lost; registering again", metadata: ["reason": "\(session.lossReason.map { "\($0)" } ?? "unknown")"])
            while !Task.isCancelled {
                do {
                    session = try await register()
                    if let map = gate.map { await acknowledge(map.epoch) }
                    break
                } catch {
                    logger.warning("cannot register in etcd", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(300))
                }
            }
        }
    }

    /// Gives up this membership and registers again as a new incarnation, which the
    /// coordinator takes out of every chain and copies in afresh: for a node that finds its copy
    /// of a shard it is a member of incomplete. It stops serving before this returns. Only for
    /// the membership the finding was made under (`incarnation`): a map of an earlier one that
    /// arrives late does not end the next.
    func rejoin(shard: Int, incarnation: Int64, reason: String) {
        let session: EtcdSession? = state.withLock { s in
            guard !s.stopped, let session = s.session, session.leaseID == incarnation, session.leaseID != s.abandonedLease else { return nil }
            s.abandonedLease = session.leaseID
            return session
        }
        guard let session else { return }
        servingUntilMs.store(0, ordering: .releasing)
        logger.warning("copy of a shard incomplete; leaving the cluster to be copied in again", metadata: ["shard": "\(shard)", "reason": "\(reason)"])
        // Closing the session revokes its lease; `keepMembership` then registers anew.
        Task { await session.close() }
    }

    private var currentLease: Int64 { state.withLock { $0.session?.leaseID ?? 0 } }

    // MARK: the map

    /// Reads and adopts the current map. `atStart`: a map of another shard count fails the
    /// start (this node's `--shards` differs from the cluster's) instead of being ignored.
    private func loadMap(atStart: Bool = false) async throws(WeftError) {
        if let kv = try await etcd.get(prefix + "map"), let map = Self.decodeMap(kv.value) {
            if atStart && map.shardCount != options.shardCount {
                throw WeftError(.invalidArgument, "the cluster's shard map has \(map.shardCount) shards; this node was started with --shards \(options.shardCount)")
            }
            await adopt(map)
        }
    }

    func refreshMap() {
        Task { try? await self.loadMap() }
    }

    private func adopt(_ map: ShardMap) async {
        if gate.adopt(map) {
            refreshServing()
            logger.info("serving by a new shard map", metadata: ["epoch": "\(map.epoch)"])
            await acknowledge(map.epoch)
        }
    }

    private func acknowledge(_ epoch: UInt64) async {
        let lease = currentLease
        guard lease != 0 else { return }
        _ = try? await etcd.put(prefix + "acks/" + options.id, Array(String(epoch).utf8), lease: lease)
    }

    private func watchMap() async {
        while !Task.isCancelled {
            do {
                // One read gives both the map and the revision to watch from (two reads could
                // miss a map published between them).
                let (kvs, revision) = try await etcd.range(prefix: prefix + "map")
                if let kv = kvs.first(where: { $0.key == prefix + "map" }), let map = Self.decodeMap(kv.value) { await adopt(map) }
                let watch = try await etcd.watch(key: prefix + "map", fromRevision: revision + 1)
                defer { watch.cancel() }
                while !Task.isCancelled {
                    for event in try await watch.next() {
                        if case .put(let kv) = event, let map = Self.decodeMap(kv.value) { await adopt(map) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.debug("map watch ended; restarting", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func reportCopied(shard: Int, since: UInt64) {
        let key = prefix + "copied/\(options.id)/\(shard)"
        Task {
            let lease = self.currentLease
            guard lease != 0 else { return }
            _ = try? await self.etcd.put(key, Array(String(since).utf8), lease: lease)
        }
    }

    private func pumpLoop() async {
        var ticks = 0
        while !Task.isCancelled {
            refreshServing()
            replication.pump()
            // Lease clocks and sweeps, every 100 ms while the node serves.
            ticks += 1
            if ticks % 10 == 0, isServingFast { leases.tick() }
            if ticks % 10 == 0 { gate.cpu.sample() }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    // MARK: coordinator

    private func runElection() async {
        while !Task.isCancelled {
            guard let session = state.withLock({ $0.session }), session.isValid else {
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            do {
                let election = EtcdElection(session: session, key: prefix + "coordinator")
                try await election.campaign(Array(options.id.utf8))
                state.withLock { $0.coordinator = true }
                logger.info("elected coordinator", metadata: ["node": "\(options.id)"])
                let loop = CoordinatorLoop(etcd: etcd, prefix: prefix, shardCount: options.shardCount, replicas: options.replicas, logger: logger)
                await loop.run(while: { session.isValid && !Task.isCancelled })
                state.withLock { $0.coordinator = false }
                logger.info("no longer coordinator", metadata: ["node": "\(options.id)"])
            } catch {
                if Task.isCancelled { return }
                state.withLock { $0.coordinator = false }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    // MARK: JSON

    static func json<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(value)).map(Array.init) ?? []
    }

    static func decodeMap(_ bytes: [UInt8]) -> ShardMap? {
        try? JSONDecoder().decode(ShardMap.self, from: Data(bytes))
    }
}

/// Lets the gate's callbacks reach the node without a reference cycle at init.
private final class WeakNode: @unchecked Sendable {
    weak var node: ClusterNode?
}
