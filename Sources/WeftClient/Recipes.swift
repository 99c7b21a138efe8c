import WeftCore

/// Where recipes keep their keys. Users may watch or list these to observe recipes.
public enum RecipeKeys {
    public static func lock(_ name: String) -> String { "_weft/lock/\(name)" }
    public static func barrier(_ name: String) -> String { "_weft/barrier/\(name)" }
    public static func election(_ name: String) -> String { "_weft/election/\(name)" }
    public static func queue(_ name: String) -> String { "_weft/queue/\(name)/" }
}

/// A held lock. `token` is a fencing token: it grows with every acquisition of any lock, so a
/// resource that remembers the highest token it has seen can refuse a stale holder.
public final class WeftLock: Sendable {
    public let name: String
    public let key: String
    public let token: Revision
    public let keeper: LeaseKeeper
    private let client: WeftClient

    init(name: String, key: String, token: Revision, keeper: LeaseKeeper, client: WeftClient) {
        self.name = name
        self.key = key
        self.token = token
        self.keeper = keeper
        self.client = client
    }

    /// True once the lease behind the lock was found gone (the lock may be someone else's now).
    public var isLost: Bool { keeper.isLost }

    /// Releases the lock (revokes its lease, which deletes the lock key).
    public func unlock() async throws(WeftError) {
        keeper.stop()
        do {
            try await client.revoke(lease: keeper.lease)
        } catch where error.code == .leaseNotFound {
            // Already gone: nothing held.
        }
    }
}

extension WeftClient {
    /// Waits until `key` is absent or changes past `version`, or the deadline passes.
    func waitForChange(of key: String, after version: Revision, deadline: ContinuousClock.Instant?) async throws(WeftError) {
        let watch = try await self.watch(.key(key), fromRevision: version + 1, keysOnly: true)
        defer { watch.cancel() }
        try await Self.withDeadline(deadline) {
            for try await _ in watch { return }
        }
    }

    /// Runs `body` and fails with `timeout` if it is still running at `deadline` (nil = never).
    /// Public so tools built on the client (the CLI) share one deadline helper.
    public static func withDeadline(_ deadline: ContinuousClock.Instant?, _ body: @escaping @Sendable () async throws -> Void) async throws(WeftError) {
        do {
            guard let deadline else {
                try await body()
                return
            }
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    try await body()
                    return true
                }
                group.addTask {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    return false
                }
                let finished = try await group.next() ?? false
                group.cancelAll()
                if !finished { throw WeftError(.timeout, "deadline passed") }
            }
        } catch let e as WeftError {
            throw e
        } catch is CancellationError {
            throw WeftError(.cancelled, "cancelled")
        } catch {
            throw WeftError(.unavailable, "\(error)")
        }
    }

    static func deadline(afterMs ms: Int64?) -> ContinuousClock.Instant? {
        ms.map { ContinuousClock.now + .milliseconds($0) }
    }

    /// Acquires the lock `name`, waiting up to `timeoutMs` (nil = forever). The lock lives on
    /// a lease of `ttlSeconds`, refreshed while held: a holder that dies frees it within a TTL.
    public func lock(_ name: String, ttlSeconds: Int64 = 10, timeoutMs: Int64? = nil, holder: String = "") async throws(WeftError) -> WeftLock {
        try await acquireExclusive(name: name, key: RecipeKeys.lock(name), value: Array(holder.utf8), ttlSeconds: ttlSeconds, timeoutMs: timeoutMs)
    }

    /// Creates `key` under a fresh lease once nobody else holds it (waiting for the holder's
    /// key to go), and keeps the lease alive. Shared by locks and elections.
    func acquireExclusive(name: String, key: String, value: [UInt8], ttlSeconds: Int64, timeoutMs: Int64?) async throws(WeftError) -> WeftLock {
        try StateKey.validate(key)
        let deadline = Self.deadline(afterMs: timeoutMs)
        var lease = try await grantLease(ttlSeconds: ttlSeconds)
        // Kept alive from the start: a wait longer than the TTL must not let the lease expire
        // before the put that would take the lock with it.
        var keeper = LeaseKeeper(client: self, lease: lease, ttlSeconds: ttlSeconds)
        do throws(WeftError) {
            while true {
                do {
                    let token = try await put(key, value, ifVersion: 0, lease: lease)
                    return WeftLock(name: name, key: key, token: token, keeper: keeper, client: self)
                } catch where error.code == .leaseNotFound {
                    // The waiter's own lease lapsed (its keep-alives were held up longer than
                    // the TTL: a stalled process, a loaded machine). It held nothing yet: wait on
                    // with a new one.
                    keeper.stop()
                    lease = try await grantLease(ttlSeconds: ttlSeconds)
                    keeper = LeaseKeeper(client: self, lease: lease, ttlSeconds: ttlSeconds)
                } catch where error.code == .versionMismatch {
                    let current: KeyValue
                    do {
                        current = try await get(key)
                    } catch where error.code == .notFound {
                        continue
                    }
                    try await waitForChange(of: key, after: current.version, deadline: deadline)
                }
                if let deadline, ContinuousClock.now >= deadline { throw WeftError(.timeout, "'\(name)' not acquired in time") }
            }
        } catch {
            keeper.stop()
            _ = try? await revoke(lease: lease)
            throw error
        }
    }

    /// Waits until `parties` callers have arrived at barrier `name`; returns this caller's
    /// arrival number (1-based). A barrier is single-use: delete its key to reuse the name.
    @discardableResult
    public func barrier(_ name: String, parties: Int, timeoutMs: Int64? = nil) async throws(WeftError) -> Int {
        guard parties >= 1 else { throw WeftError(.invalidArgument, "a barrier needs at least 1 party") }
        let key = RecipeKeys.barrier(name)
        let deadline = Self.deadline(afterMs: timeoutMs)
        let (arrived, version) = try await add(key, 1)
        if arrived >= Int64(parties) { return Int(arrived) }
        let watch = try await self.watch(.key(key), fromRevision: version + 1)
        defer { watch.cancel() }
        try await Self.withDeadline(deadline) {
            for try await event in watch where event.kind == .put {
                if let n = Int64(String(decoding: event.kv.value, as: UTF8.self)), n >= Int64(parties) { return }
            }
            throw WeftError(.unavailable, "barrier watch ended")
        }
        return Int(arrived)
    }

    /// Waits until `key` exists with a version ≥ `version` (1 = merely exists); returns it.
    public func waitFor(key: String, version: Revision = 1, timeoutMs: Int64? = nil) async throws(WeftError) -> KeyValue {
        let deadline = Self.deadline(afterMs: timeoutMs)
        let watch = try await self.watch(.key(key))
        defer { watch.cancel() }
        do {
            let kv = try await get(key)
            if kv.version >= version { return kv }
        } catch where error.code == .notFound {}
        let found = ResultBox()
        try await Self.withDeadline(deadline) {
            for try await event in watch where event.kind == .put && event.kv.version >= version {
                found.set(event.kv)
                return
            }
            throw WeftError(.unavailable, "watch ended")
        }
        guard let kv = found.get() else { throw WeftError(.unavailable, "watch ended") }
        return kv
    }

    /// Waits until at least `count` keys exist under `prefix`; returns their names.
    ///
    /// Watches first, then lists: every change after the list reaches the watch, and one
    /// before it that the watch also delivers is ordered by the key's version. (Listing first
    /// and watching from the list's revision would need one revision for all shards, which a
    /// cluster does not have: its revisions are per shard.)
    public func waitFor(prefix: String, count: Int, timeoutMs: Int64? = nil) async throws(WeftError) -> [String] {
        let deadline = Self.deadline(afterMs: timeoutMs)
        while true {
            let watch = try await self.watch(.prefix(prefix), keysOnly: true)
            defer { watch.cancel() }
            let page = try await list(prefix: prefix, limit: max(count, 1), keysOnly: true)
            if page.entries.count >= count { return page.entries.map(\.key) }
            var keys: [String: Revision] = [:]
            for e in page.entries { keys[e.key] = e.version }
            let state = KeySetBox(keys)
            do {
                try await Self.withDeadline(deadline) {
                    for try await event in watch {
                        if state.apply(event) >= count { return }
                    }
                    throw WeftError(.unavailable, "watch ended")
                }
                return state.keys
            } catch where error.code == .compacted {
                continue
            }
        }
    }
}

/// Leader election: one leader at a time per name, on a lease; others wait.
extension WeftClient {
    /// Campaigns for leadership of `name` with `value`; returns once elected.
    public func campaign(_ name: String, value: [UInt8], ttlSeconds: Int64 = 10, timeoutMs: Int64? = nil) async throws(WeftError) -> WeftLock {
        try await acquireExclusive(name: name, key: RecipeKeys.election(name), value: value, ttlSeconds: ttlSeconds, timeoutMs: timeoutMs)
    }

    /// The current leader's value and version, nil if there is none.
    public func leader(_ name: String) async throws(WeftError) -> KeyValue? {
        do { return try await get(RecipeKeys.election(name)) } catch where error.code == .notFound { return nil }
    }
}

final class ResultBox: Sendable {
    private let value = SyncBox<KeyValue?>(nil)
    func set(_ kv: KeyValue) { value.set(kv) }
    func get() -> KeyValue? { value.get() }
}

/// Key → version set that applies watch events idempotently.
final class KeySetBox: Sendable {
    private let box: SyncBox<[String: Revision]>
    init(_ keys: [String: Revision]) { box = SyncBox(keys) }
    func apply(_ event: WatchEvent) -> Int {
        box.update { keys in
            switch event.kind {
            case .put:
                if (keys[event.kv.key] ?? 0) < event.kv.version { keys[event.kv.key] = event.kv.version }
            case .delete:
                if let v = keys[event.kv.key], v < event.kv.version { keys[event.kv.key] = nil }
            }
            return keys.count
        }
    }
    var keys: [String] { box.get().keys.sorted() }
}
