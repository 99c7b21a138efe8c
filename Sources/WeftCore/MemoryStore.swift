import Synchronization

/// The in-memory state store: every operation of the state model, sharded so that requests on
/// different keys rarely meet on a lock, with per-shard watch history and leases.
///
/// Safe to call from any number of threads. Each shard has its own lock; one atomic counter
/// hands out revisions, taken under the shard's lock so that per shard (and so per key)
/// revisions increase in the order mutations apply. With a `ChangeLog`, a mutation is applied
/// in memory, appended to the log, and acknowledged (and shown to watchers) once the log calls
/// `done`; without one, it is acknowledged at once.
///
/// Sinks (`WatchSink`) and `ChangeLog.append` are called with a shard lock held: they must not
/// call back into the store synchronously. `completion`s and `WatchSink.terminate` run with no
/// store lock held (unless the change log calls `done` from inside `append`).
public final class MemoryStore: StateStore, Sendable {
    public let limits: StoreLimits
    /// Number of shards keys hash to (see `shard(of:shardCount:)`).
    public let shardCount: Int

    let shards: [Shard]
    let changeLog: (any ChangeLog)?
    let nowMs: @Sendable () -> Int64
    let leases = Mutex(LeaseTable())
    let watcherCount = WatcherCount()
    private let lastRevision: Atomic<Revision>

    /// Creates an empty store, or one holding `recovered` (from a durable store's recovery).
    ///
    /// - Parameters:
    ///   - changeLog: Where mutations are made durable; nil for a purely in-memory store.
    ///   - recovered: Entries and leases to start with. Recovered leases get a fresh TTL, and
    ///     revisions continue `changeLog.pendingChangesMax` above `recovered.revision`, so none
    ///     seen before a crash is handed out again; watches from before that are `compacted`.
    ///   - nowMs: A monotonic clock in milliseconds, for lease TTLs.
    public init(
        limits: StoreLimits = .default,
        shardCount: Int = 64,
        changeLog: (any ChangeLog)? = nil,
        recovered: RecoveredState? = nil,
        nowMs: @escaping @Sendable () -> Int64 = MemoryStore.monotonicMilliseconds()
    ) {
        precondition(shardCount >= 1, "shardCount must be at least 1")
        precondition(limits.listLimitMax >= 1 && limits.watchHistoryPerShard >= 0, "invalid StoreLimits")
        self.limits = limits
        self.shardCount = shardCount
        self.changeLog = changeLog
        self.nowMs = nowMs
        var startRevision: Revision = 0
        if let recovered {
            let (sum, overflow) = recovered.revision.addingReportingOverflow(UInt64(max(0, changeLog?.pendingChangesMax ?? 0)))
            precondition(!overflow, "recovered revision \(recovered.revision) is too large")
            startRevision = sum
        }
        self.lastRevision = Atomic(startRevision)
        shards = (0..<shardCount).map { _ in
            Shard(hub: WatchHub(
                historyCount: limits.watchHistoryPerShard,
                historyValueBytesMax: limits.watchHistoryValueBytesPerShard,
                compactedThrough: startRevision))
        }
        if let recovered { load(recovered) }
    }

    deinit {
        let handles = shards.flatMap { $0.hub.drain() }
        for handle in handles { handle.end(WeftError(.unavailable, "the store shut down")) }
    }

    /// The highest revision handed out so far.
    public var revision: Revision { lastRevision.load(ordering: .acquiring) }

    /// The shard `key` belongs to: FNV-1a (64 bit) of its UTF-8 bytes, modulo `shardCount`.
    /// Stable across processes and versions, so every node agrees on it.
    public static func shard(of key: String, shardCount: Int) -> Int {
        precondition(shardCount >= 1, "shardCount must be at least 1")
        func fnv1a<S: Sequence<UInt8>>(_ bytes: S) -> UInt64 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in bytes {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
            return hash
        }
        let hash = key.utf8.withContiguousStorageIfAvailable { fnv1a($0) } ?? fnv1a(key.utf8)
        return Int(hash % UInt64(shardCount))
    }

    /// A clock of milliseconds since the call, from `ContinuousClock` (monotonic).
    public static func monotonicMilliseconds() -> @Sendable () -> Int64 {
        let clock = ContinuousClock()
        let start = clock.now
        return {
            let (seconds, attoseconds) = start.duration(to: clock.now).components
            return seconds * 1000 + attoseconds / 1_000_000_000_000_000
        }
    }

    func shard(for key: String) -> Shard {
        shards[Self.shard(of: key, shardCount: shardCount)]
    }

    func lastRevisionCompareExchange(expected: Revision, desired: Revision) -> (exchanged: Bool, original: Revision) {
        lastRevision.compareExchange(expected: expected, desired: desired, ordering: .acquiringAndReleasing)
    }

    /// Takes the next revision. Called with the mutated shard's lock held.
    func nextRevision() -> Revision {
        lastRevision.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
    }

    public func execute(_ request: StateRequest, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        execute(request, replyAt: nil, completion: completion)
    }

    /// `replyAt` (a put on a cluster node): the client the chain's tail tells once it is committed.
    public func execute(
        _ request: StateRequest, replyAt: ReplyAt?, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void
    ) {
        switch request {
        case .get(let key, let range, let ifChangedSince):
            completion(Result { () throws(WeftError) in try get(key, range: range, ifChangedSince: ifChangedSince) })
        case .list(let prefix, let after, let limit, let keysOnly):
            completion(Result { () throws(WeftError) in try list(prefix: prefix, after: after, limit: limit, keysOnly: keysOnly) })
        case .status:
            completion(.success(.status(status())))
        case .put(let key, let value, let ifVersion, let lease):
            put(key, value: value, ifVersion: ifVersion, lease: lease, replyAt: replyAt, completion: completion)
        case .writeRange(let key, let offset, let bytes, let ifVersion):
            writeRange(key, offset: offset, bytes: bytes, ifVersion: ifVersion, completion: completion)
        case .append(let key, let bytes, let ifVersion):
            append(key, bytes: bytes, ifVersion: ifVersion, completion: completion)
        case .add(let key, let delta):
            add(key, delta: delta, completion: completion)
        case .delete(let key, let ifVersion):
            delete(key, ifVersion: ifVersion, completion: completion)
        case .leaseGrant(let ttlSeconds, let id):
            grantLease(ttlSeconds: ttlSeconds, id: id, completion: completion)
        case .leaseKeepAlive(let id):
            completion(Result { () throws(WeftError) in try keepAlive(id) })
        case .leaseRevoke(let id):
            revokeLease(id, completion: completion)
        }
    }

    func status() -> StoreStatus {
        var keys = 0
        var valueBytes = 0
        for shard in shards {
            shard.state.withLock { state in
                keys += state.entries.count
                valueBytes += state.valueBytes
            }
        }
        return StoreStatus(
            revision: revision, keys: keys, valueBytes: valueBytes, shards: shardCount,
            leases: leases.withLock { $0.count },
            watchers: watcherCount.value.load(ordering: .relaxed),
            durable: changeLog?.isDurable ?? false)
    }

    /// Fills the empty store from a recovery. Keys attached to a lease that was not recovered
    /// get an already expired lease, so the next `expireLeases()` deletes them properly.
    private func load(_ recovered: RecoveredState) {
        let now = nowMs()
        leases.withLock { table in
            for lease in recovered.leases { table.insert(lease.id, ttlSeconds: lease.ttlSeconds, nowMs: now) }
        }
        for kv in recovered.entries {
            let key = ByteKey(kv.key)
            shard(for: kv.key).state.withLock { state in
                let entry = StoredEntry(value: kv.value, version: kv.version, createRevision: kv.createRevision, lease: kv.lease)
                state.valueBytes += kv.value.count - (state.entries[key]?.value.count ?? 0)
                state.entries[key] = entry
                state.revision = max(state.revision, kv.version)
            }
            if kv.lease != 0 {
                leases.withLock { table in
                    if !table.contains(kv.lease) { table.insert(kv.lease, ttlSeconds: 0, nowMs: now) }
                    table.move(key, from: 0, to: kv.lease)
                }
            }
        }
    }
}
