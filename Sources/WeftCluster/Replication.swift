import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftCore
import WeftTransport
import WeftWire

/// A node's side of chain replication, as the `ChangeLog` of its store: every change of a
/// shard (made here as head, or applied from the predecessor) is sent to the shard's successor
/// and acknowledged, i.e. `done`, only once the successor answers, which it does once the
/// change has reached the tail; at the tail it is done at once. With a durable `inner` log a
/// change is also done only once it is on disk.
///
/// Per shard, changes are sent in revision order on one connection, each naming the revision
/// before it, so the successor notices a gap. Changes not yet acknowledged stay pending; when
/// the successor changes (a failure, a join) or a send fails, every pending change is sent
/// again, followed by a fence for the new epoch; the successor ignores what it already has.
/// A node copying a shard to a joining node sends it a snapshot and then every later change.
public final class Replication: ChangeLog, Sendable {
    struct Pending {
        var revision: Revision
        var previous: Revision
        var change: Change
        var local: Bool
        var remote: Bool
        var error: WeftError?
        var done: @Sendable (WeftError?) -> Void
        /// Held at the tail for cache leases: reads of the key wait until it completes.
        var heldKey: String? = nil
        /// Invalidations sent for it that the caches have not acknowledged yet (a held write
        /// completes when this reaches 0, or when the leases run out).
        var acksLeft = 0
        /// Those invalidations' numbers (forgotten when the change completes: a cache whose
        /// connection closed never answers).
        var invalidations: [UInt64] = []
        /// A put's client, whom this node tells once the change completes here as the tail.
        var replyAt: ReplyAt? = nil
    }

    struct Follower: Equatable {
        var id: String
        var address: String
        var since: UInt64
    }

    struct ShardStream {
        var last: Revision = 0
        var pending: [Pending] = []
        var epoch: UInt64 = 0
        var inChain = false
        var successor: String?
        /// Pending changes (and a fence) must be sent to the successor again.
        var resend = false
        var fenceEpoch: UInt64?
        var follower: Follower?
        var followerRestart = false
        /// The next copy to the follower tries a delta first (it may hold most of the shard:
        /// a node restarted with --data); after a delta fails, a full copy.
        var copyDelta = true
        /// A delta copy waits for the follower's shard revision.
        var copyInFlight = false
        /// Receiving a delta copy: the keys it named (the rest is deleted at its end).
        var copySeen: Set<String>?
        /// Receiving a copy of the shard: its entries are logged locally only.
        var copying = false
        var draining = false
        /// Cache leases granted per key (monotonic ms until which a cache may hold it).
        var cachedUntil: [String: Int64] = [:]
        /// Who holds each key's cached value, until when: a write tells them to drop it.
        var holders: [String: [(holder: any CacheHolder, until: Int64)]] = [:]
        /// Keys with writes held for cache leases (count per key), and reads waiting on them.
        var heldKeys: [String: Int] = [:]
        /// A node that granted cache leases as tail and is no longer the tail sends nothing
        /// down the chain before they end (the new tail would show new values meanwhile).
        var streamHeldUntil: Int64 = 0
        var keyWaiters: [String: [@Sendable () -> Void]] = [:]
        /// When this node became the shard's tail (it may not know the leases its predecessor
        /// as tail granted: its first writes wait one lease).
        var tailSinceMs: Int64 = 0
        var waiters: [(revision: Revision, call: @Sendable () -> Void)] = []
        /// Changes appended to `pending` and completed, ever; and calls waiting for the
        /// completion of every change appended before them.
        var appended: UInt64 = 0
        var completed: UInt64 = 0
        var drainWaiters: [(count: UInt64, call: @Sendable () -> Void)] = []

        /// Removes and returns the changes at the front that are complete, and the reads
        /// that waited on the held ones.
        mutating func popCompleted() -> ([Pending], [@Sendable () -> Void]) {
            var n = 0
            while n < pending.count, pending[n].local && pending[n].remote { n += 1 }
            guard n > 0 else { return ([], []) }
            let done = Array(pending[..<n])
            pending.removeFirst(n)
            completed += UInt64(n)
            var released: [@Sendable () -> Void] = []
            for p in done {
                guard let key = p.heldKey else { continue }
                let left = (heldKeys[key] ?? 1) - 1
                if left > 0 {
                    heldKeys[key] = left
                } else {
                    heldKeys[key] = nil
                    released += keyWaiters.removeValue(forKey: key) ?? []
                }
            }
            return (done, released)
        }

        /// Waiters whose revision is committed (no pending change at or below it).
        mutating func popWaiters() -> [@Sendable () -> Void] {
            var ready: [@Sendable () -> Void] = []
            if !drainWaiters.isEmpty {
                let done = completed
                ready = drainWaiters.filter { $0.count <= done }.map(\.call)
                drainWaiters.removeAll { $0.count <= done }
            }
            guard !waiters.isEmpty else { return ready }
            let lowest = pending.first?.revision ?? .max
            ready += waiters.filter { $0.revision < lowest }.map(\.call)
            waiters.removeAll { $0.revision < lowest }
            return ready
        }
    }

    public let me: String
    public let shardCount: Int
    let inner: (any ChangeLog)?
    let peers: PeerPool
    let logger: Logger
    private let shards: [LockedBox<ShardStream>]
    private let storeRef = Mutex<MemoryStore?>(nil)
    private let loop: any EventLoop
    private let stats = ReplicationStats()
    /// Client connections by the client id they named (see `ReplyAt`).
    private let commitFeeds = Mutex<[UInt64: any CommitFeed]>([:])

    /// How long a cache may hold a value read from a tail; 0 disables caching.
    public let cacheLeaseMs: Int64
    let nowMs: @Sendable () -> Int64 = MemoryStore.monotonicMilliseconds()

    public var pendingChangesMax: Int { inner?.pendingChangesMax ?? 0 }
    public var isDurable: Bool { inner?.isDurable ?? false }

    /// Whether a joining copy to this node may be a delta: only while what it holds is what
    /// it recovered from disk at start (plus what it received since as a member). Off for a
    /// node without a durable log, and for good once the node lost its membership while alive.
    var acceptsDeltaCopy: Bool { isDurable && !deltaForbidden.load(ordering: .acquiring) }
    private let deltaForbidden = Atomic<Bool>(false)

    func forbidDeltaCatchUp() { deltaForbidden.store(true, ordering: .releasing) }

    /// How much longer (ms) this node's cluster membership surely lasts: no cache lease it
    /// grants outlives it, so once a map has dropped a node whose membership ended, no cache
    /// holds a value on that node's word.
    let membershipLeftMs: @Sendable () -> Int64

    init(
        me: String, shardCount: Int, inner: (any ChangeLog)?, peers: PeerPool, cacheLeaseMs: Int64 = 1_000,
        membershipLeftMs: @escaping @Sendable () -> Int64 = { .max }, logger: Logger
    ) {
        self.cacheLeaseMs = cacheLeaseMs
        self.membershipLeftMs = membershipLeftMs
        self.me = me
        self.shardCount = shardCount
        self.inner = inner
        self.peers = peers
        self.logger = logger
        self.shards = (0..<shardCount).map { _ in LockedBox(ShardStream()) }
        self.loop = MultiThreadedEventLoopGroup.singleton.any()
    }

    /// The store this log serves (set once, right after the store is made with this log).
    func attach(_ store: MemoryStore) {
        storeRef.withLock { $0 = store }
        for s in 0..<shardCount {
            let revision = store.shardRevision(s)
            shards[s].withLock { $0.last = revision }
        }
    }

    var store: MemoryStore? { storeRef.withLock { $0 } }

    // MARK: ChangeLog

    public func append(_ change: Change, revision: Revision, done: @escaping @Sendable (WeftError?) -> Void) {
        append(change, revision: revision, replyAt: nil, done: done)
    }

    /// `replyAt` goes down the chain with the change; the tail tells that client once the change
    /// is committed. Not on a durable node: the tail's disk holding the change says nothing of
    /// its predecessors' (which the head's answer waits for), so every node of the chain drops
    /// it that logs to disk, and the head's answer is the client's only one.
    public func append(_ change: Change, revision: Revision, replyAt: ReplyAt?, done: @escaping @Sendable (WeftError?) -> Void) {
        let replyAt = isDurable ? nil : replyAt
        let key: String
        switch change {
        case .put(let kv): key = kv.key
        case .delete(let k, _): key = k
        case .leaseGrant, .leaseRevoke:
            if let inner { inner.append(change, revision: revision, done: done) } else { done(nil) }
            return
        }
        let s = MemoryStore.shard(of: key, shardCount: shardCount)
        let now = cacheLeaseMs > 0 ? nowMs() : 0
        var holdUntil: Int64 = 0
        var invalidate: [(any CacheHolder, UInt64)] = []
        var seqs: [UInt64] = []
        let epoch: UInt64 = shards[s].withLock { st in
            if st.copying {
                st.pending.append(Pending(revision: revision, previous: 0, change: change, local: inner == nil, remote: true, done: done))
                st.appended += 1
                return 0
            }
            let previous = st.last
            st.last = max(st.last, revision)
            var acks = 0
            if st.successor == nil && st.inChain && cacheLeaseMs > 0 {
                // The tail acknowledges no write while a cache may hold the key: the caches it
                // knows of are told to drop it (the write goes on once they all confirm); for
                // leases an earlier tail granted it waits them out.
                let known = (st.holders.removeValue(forKey: key) ?? []).filter { $0.until > now }
                let floor = st.tailSinceMs + cacheLeaseMs
                let until = max(known.map(\.until).max() ?? 0, floor)
                if until > now {
                    holdUntil = until
                    for h in known { invalidate.append((h.holder, nextInvalidation(shard: s, revision: revision))) }
                    seqs = invalidate.map(\.1)
                    if floor <= now && !known.isEmpty { acks = known.count }
                }
            }
            st.pending.append(Pending(
                revision: revision, previous: previous, change: change, local: inner == nil,
                remote: st.successor == nil && holdUntil == 0, done: done, heldKey: holdUntil > 0 ? key : nil, acksLeft: acks, invalidations: seqs,
                replyAt: replyAt))
            st.appended += 1
            if holdUntil > 0 { st.heldKeys[key, default: 0] += 1 }
            let message = Self.message(change, shard: s, from: me, revision: revision, previous: previous, replyAt: replyAt)
            if st.successor != nil, cacheLeaseMs > 0, let c = st.cachedUntil[key], c > now {
                // Leases this node granted (as tail) on the key still run: hold the stream.
                st.streamHeldUntil = max(st.streamHeldUntil, c)
            }
            if let successor = st.successor, !st.resend {
                if st.streamHeldUntil > 0 && (cacheLeaseMs == 0 ? false : nowMs() < st.streamHeldUntil) {
                    st.resend = true
                } else {
                    sendChange(message, shard: s, to: successor, epoch: st.epoch)
                }
            }
            if let f = st.follower, !st.followerRestart {
                var copied = message
                copied.replyAt = nil
                sendToFollower(copied, shard: s, follower: f, epoch: st.epoch)
            }
            return st.epoch
        }
        _ = epoch
        for (holder, seq) in invalidate { holder.invalidate(key: key, seq: seq) }
        if holdUntil > 0 {
            loop.scheduleTask(in: .milliseconds(holdUntil - now)) { self.holdDone(shard: s, revision: revision) }
        }
        if let inner {
            inner.append(change, revision: revision) { error in self.localDone(shard: s, revision: revision, error: error) }
        } else {
            drain(s)
        }
    }

    static func message(_ change: Change, shard: Int, from: String, revision: Revision, previous: Revision, replyAt: ReplyAt? = nil) -> ReplicationMessage {
        switch change {
        case .put(let kv):
            return ReplicationMessage(shard: shard, from: from, kind: .put, entry: kv, revision: revision, previous: previous, replyAt: replyAt)
        case .delete(let key, _):
            let tombstone = KeyValue(key: key, value: [], version: revision, createRevision: 0)
            return ReplicationMessage(shard: shard, from: from, kind: .delete, entry: tombstone, revision: revision, previous: previous)
        case .leaseGrant, .leaseRevoke:
            preconditionFailure("lease changes are not replicated per shard")
        }
    }

    // MARK: sending (called with the shard's stream locked; failures are handled off the lock)

    private func sendChange(_ message: ReplicationMessage, shard s: Int, to successor: String, epoch: UInt64) {
        let revision = message.revision
        stats.sent.add(1, ordering: .relaxed)
        peers.send(message, to: successor, epoch: epoch) { result in
            switch result {
            case .success: self.remoteDone(shard: s, revision: revision)
            case .failure(let error): self.loop.execute { self.sendFailed(shard: s, error: error) }
            }
        }
    }

    private func sendToFollower(_ message: ReplicationMessage, shard s: Int, follower: Follower, epoch: UInt64) {
        peers.send(message, to: follower.address, epoch: epoch) { result in
            if case .failure(let error) = result {
                self.loop.execute { self.followerFailed(shard: s, follower: follower, error: error) }
            }
        }
    }

    private func sendFailed(shard s: Int, error: WeftError) {
        let first = shards[s].withLock { st in
            defer { st.resend = true }
            return !st.resend
        }
        if first { logger.debug("replication send failed; will resend", metadata: ["shard": "\(s)", "error": "\(error)"]) }
    }

    private func followerFailed(shard s: Int, follower: Follower, error: WeftError) {
        shards[s].withLock { st in
            guard st.follower == follower else { return }
            st.followerRestart = true
            // A delta the follower could not match (it lacked a key it was told to keep): copy all.
            if error.code == .versionMismatch { st.copyDelta = false }
        }
        logger.debug("copy to a joining node failed; will restart", metadata: ["shard": "\(s)", "node": "\(follower.id)", "error": "\(error)"])
    }

    // MARK: completion

    private func remoteDone(shard s: Int, revision: Revision) {
        shards[s].withLock { st in
            // Answers come in order; this one also covers every change before it.
            for i in st.pending.indices where st.pending[i].revision <= revision { st.pending[i].remote = true }
        }
        drain(s)
    }

    /// A write held at the tail for cache leases may now be acknowledged (if this node is still
    /// the tail; otherwise its successor's answer decides).
    private func holdDone(shard s: Int, revision: Revision) {
        shards[s].withLock { st in
            guard st.successor == nil, let i = st.pending.firstIndex(where: { $0.revision == revision }) else { return }
            st.pending[i].remote = true
        }
        drain(s)
    }

    // MARK: cache leases

    private let invalidations = Mutex<(next: UInt64, open: [UInt64: (shard: Int, revision: Revision)])>((1, [:]))

    private func nextInvalidation(shard s: Int, revision: Revision) -> UInt64 {
        invalidations.withLock { inv in
            let seq = inv.next
            inv.next += 1
            inv.open[seq] = (s, revision)
            return seq
        }
    }

    /// A cache dropped the key of invalidation `seq`: the held write goes on once every cache
    /// it told has.
    func cacheAcked(seq: UInt64) {
        guard let (s, revision) = invalidations.withLock({ $0.open.removeValue(forKey: seq) }) else { return }
        let done = shards[s].withLock { st -> Bool in
            guard let i = st.pending.firstIndex(where: { $0.revision == revision }), st.pending[i].acksLeft > 0 else { return false }
            st.pending[i].acksLeft -= 1
            guard st.pending[i].acksLeft == 0, st.successor == nil else { return false }
            st.pending[i].remote = true
            return true
        }
        if done { drain(s) }
    }

    /// Records a cache lease on `key` (called under the store's shard lock, with the read).
    /// Returns the lease to grant in ms (at most what is left of the membership), 0 for none.
    func noteCached(shard s: Int, key: String, holder: (any CacheHolder)?) -> UInt32 {
        let grant = min(cacheLeaseMs, membershipLeftMs())
        guard grant > 0 else { return 0 }
        let until = nowMs() + grant
        return shards[s].withLock { st -> UInt32 in
            // Only the tail grants leases, decided under the lock a new map is adopted under:
            // a node that has just stopped being the tail computed how long it holds its stream
            // from the leases it had granted, and one granted after that would escape it.
            guard st.successor == nil, st.inChain, !st.copying else { return 0 }
            st.cachedUntil[key] = max(st.cachedUntil[key] ?? 0, until)
            guard let holder else { return UInt32(grant) }
            var list = st.holders[key] ?? []
            if let i = list.firstIndex(where: { $0.holder === holder }) {
                list[i].until = until
            } else {
                list.append((holder, until))
            }
            st.holders[key] = list
            return UInt32(grant)
        }
    }

    /// Calls `ready` once no write of `key` is held for cache leases (at once if none is).
    /// A waiting `ready` runs on an event loop: the write that releases it may complete under
    /// the store's shard lock, which `ready` (a read) takes.
    func whenNotHeld(shard s: Int, key: String, _ ready: @escaping @Sendable () -> Void) {
        let loop = self.loop
        let now: Bool = shards[s].withLock { st in
            guard st.heldKeys[key] != nil else { return true }
            st.keyWaiters[key, default: []].append { loop.execute(ready) }
            return false
        }
        if now { ready() }
    }

    /// True while a write of `key` is held for cache leases.
    func isHeld(shard s: Int, key: String) -> Bool {
        shards[s].withLock { $0.heldKeys[key] != nil }
    }

    /// This node became the tail of `s` now: for `holdMs` its writes wait for cache leases
    /// an earlier tail may have granted.
    func noteTailStart(shard s: Int, holdMs: Int64) {
        let since = nowMs() + holdMs - cacheLeaseMs
        shards[s].withLock { $0.tailSinceMs = max($0.tailSinceMs, since) }
    }



    /// Drops cache leases that have ended.
    private func sweepCacheLeases(_ st: inout ShardStream) {
        guard !st.cachedUntil.isEmpty else { return }
        let now = nowMs()
        st.cachedUntil = st.cachedUntil.filter { $0.value > now }
        st.holders = st.holders.compactMapValues { list in
            let live = list.filter { $0.until > now }
            return live.isEmpty ? nil : live
        }
    }

    private func localDone(shard s: Int, revision: Revision, error: WeftError?) {
        shards[s].withLock { st in
            if let i = st.pending.firstIndex(where: { $0.revision == revision && !$0.local }) {
                st.pending[i].local = true
                if let error { st.pending[i].error = error }
            }
        }
        drain(s)
    }

    /// Calls the `done`s of completed changes in order, from one thread at a time per shard.
    private func drain(_ s: Int) {
        while true {
            let (batch, waiters, isTail): ([Pending], [@Sendable () -> Void], Bool) = shards[s].withLock { st in
                guard !st.draining else { return ([], [], false) }
                let (batch, released) = st.popCompleted()
                let waiters = st.popWaiters() + released
                if batch.isEmpty && waiters.isEmpty { return ([], [], false) }
                st.draining = true
                return (batch, waiters, st.successor == nil && st.inChain && !st.copying)
            }
            if batch.isEmpty && waiters.isEmpty { return }
            let answered = batch.flatMap(\.invalidations)
            if !answered.isEmpty { invalidations.withLock { inv in for seq in answered { inv.open[seq] = nil } } }
            if isTail { tellCommitted(batch) }
            for p in batch { p.done(p.error) }
            for w in waiters { w() }
            shards[s].withLock { $0.draining = false }
        }
    }

    /// Tells the clients of committed puts that carry a `replyAt` (this node is their tail), on
    /// the connections they named themselves on. A client with no such connection here gets
    /// the head's answer only.
    private func tellCommitted(_ batch: [Pending]) {
        for p in batch where p.error == nil {
            guard let to = p.replyAt, case .put(let kv) = p.change else { continue }
            guard let feed = commitFeeds.withLock({ $0[to.client] }) else { continue }
            stats.toldCommitted.add(1, ordering: .relaxed)
            feed.committed(seq: to.seq, version: p.revision, length: UInt64(kv.value.count))
        }
    }

    func openCommitFeed(client: UInt64, feed: any CommitFeed) {
        commitFeeds.withLock { $0[client] = feed }
    }

    func closeCommitFeed(client: UInt64, feed: any CommitFeed) {
        commitFeeds.withLock { all in if all[client] === feed { all[client] = nil } }
    }

    /// Calls `body` once every change of the shard up to `revision` has been acknowledged
    /// (at once if none is pending).
    func whenCommitted(shard s: Int, revision: Revision, _ body: @escaping @Sendable () -> Void) {
        shards[s].withLock { $0.waiters.append((revision, body)) }
        drain(s)
    }

    /// Calls `body` once every change of the shard logged so far is complete (on disk, with
    /// a durable log), in whatever order their revisions came (a shard copy's do not ascend).
    func whenLogged(shard s: Int, _ body: @escaping @Sendable () -> Void) {
        shards[s].withLock { st in
            let count = st.appended
            st.drainWaiters.append((count, body))
        }
        drain(s)
    }

    // MARK: the map

    /// Adopts a new shard map: new successors get every pending change again and a fence, a
    /// tail completes what is pending, a copy source starts copying to the joining node.
    func adopt(_ map: ShardMap) {
        for s in 0..<min(shardCount, map.shardCount) {
            let inChain = map.chains[s].contains(me)
            let successor = map.successor(of: me, in: s).flatMap { map.address(of: $0) }
            var follower: Follower?
            if let join = map.joining[s], join.source == me, map.tail(s) == me, let address = map.address(of: join.node) {
                follower = Follower(id: join.node, address: address, since: join.since)
            }
            let now = nowMs()
            let holds: [(Revision, Int64)] = shards[s].withLock { st in
                var holds: [(Revision, Int64)] = []
                st.epoch = map.epoch
                st.inChain = inChain
                if successor != st.successor {
                    st.successor = successor
                    if successor == nil {
                        // Now the tail: what is pending is committed, but once caches may no
                        // longer hold the values it replaces (the old tail may have granted
                        // leases this node does not know of).
                        let holdUntil = cacheLeaseMs > 0 && inChain ? st.tailSinceMs + cacheLeaseMs : 0
                        for i in st.pending.indices where !st.pending[i].remote {
                            if !inChain {
                                st.pending[i].remote = true
                                // No longer a replica: the change's fate is unknown here.
                                st.pending[i].error = WeftError(.unavailable, "this node left the chain of shard \(s)")
                            } else if holdUntil > now, st.pending[i].heldKey == nil, let key = st.pending[i].change.key {
                                st.pending[i].heldKey = key
                                st.heldKeys[key, default: 0] += 1
                                holds.append((st.pending[i].revision, holdUntil - now))
                            } else {
                                st.pending[i].remote = true
                            }
                        }
                    }
                }
                if successor != nil {
                    st.resend = true
                    st.fenceEpoch = map.epoch
                    // Leases granted while this node was the tail: nothing goes down before they end.
                    if let latest = st.cachedUntil.values.max(), latest > now { st.streamHeldUntil = max(st.streamHeldUntil, latest) }
                }
                if follower != st.follower {
                    st.follower = follower
                    st.followerRestart = follower != nil
                    st.copyDelta = true
                }
                return holds
            }
            for (revision, ms) in holds {
                loop.scheduleTask(in: .milliseconds(ms)) { self.holdDone(shard: s, revision: revision) }
            }
            drain(s)
        }
        pump()
    }

    /// Sends what is due: pending changes and fences to successors, copies to joining nodes.
    /// Called on every map change and periodically.
    func pump() {
        for s in 0..<shardCount {
            let copy: (Follower, Bool)? = shards[s].withLock { st in
                if st.cachedUntil.count > 1024 { sweepCacheLeases(&st) }
                if st.resend, let successor = st.successor, st.streamHeldUntil == 0 || nowMs() >= st.streamHeldUntil {
                    if peers.isConnected(successor) {
                        st.resend = false
                        for p in st.pending where !p.remote {
                            sendChange(Self.message(p.change, shard: s, from: me, revision: p.revision, previous: p.previous, replyAt: p.replyAt),
                                       shard: s, to: successor, epoch: st.epoch)
                        }
                        if let fence = st.fenceEpoch {
                            st.fenceEpoch = nil
                            let message = ReplicationMessage(shard: s, from: me, kind: .fence, revision: st.last)
                            peers.send(message, to: successor, epoch: fence) { result in
                                if case .failure = result {
                                    self.loop.execute { self.shards[s].withLock { st in
                                        st.resend = true
                                        if st.fenceEpoch == nil { st.fenceEpoch = st.epoch }
                                    } }
                                }
                            }
                        }
                    } else {
                        peers.prepare(successor)
                    }
                }
                guard st.followerRestart, !st.copyInFlight, let f = st.follower else { return nil }
                if !peers.isConnected(f.address) {
                    peers.prepare(f.address)
                    return nil
                }
                // A delta copy first asks the follower for its revision: meanwhile nothing is
                // streamed to it (`followerRestart` stays set until the snapshot is queued), for
                // a change that reached it before the snapshot would follow a revision it lacks.
                if st.copyDelta { st.copyInFlight = true }
                return (f, st.copyDelta)
            }
            if let (follower, delta) = copy {
                if delta { startDeltaCopy(shard: s, to: follower) } else { startCopy(shard: s, to: follower, since: nil) }
            }
        }
    }

    /// Asks the joining node for its shard revision, then copies the shard as a delta: entries
    /// newer than that in full, older ones as "keep" (it checks it holds them), the rest of
    /// what it holds is deleted. A restarted node with --data so catches up instead of
    /// receiving everything again.
    private func startDeltaCopy(shard s: Int, to follower: Follower) {
        let epoch = shards[s].withLock { $0.epoch }
        peers.send(ReplicationMessage(shard: s, from: me, kind: .snapshotDelta), to: follower.address, epoch: epoch) { result in
            self.loop.execute {
                switch result {
                case .success(let revision):
                    self.startCopy(shard: s, to: follower, since: revision)
                case .failure(let error):
                    self.shards[s].withLock { st in
                        st.copyInFlight = false
                        if st.follower == follower {
                            st.followerRestart = true
                            // An older node that does not know delta copies: copy all.
                            if error.code == .malformedRequest || error.code == .invalidArgument { st.copyDelta = false }
                        }
                    }
                }
            }
        }
    }

    /// Sends the joining node a snapshot of the shard (`since`: a delta against what it holds up
    /// to that revision; nil: all of it, replacing what it holds); every later change follows
    /// on the same connection (the snapshot is taken and queued under the store's shard lock,
    /// which every change also holds while it is sent).
    private func startCopy(shard s: Int, to follower: Follower, since: Revision?) {
        guard let store else { return }
        let sent: (count: Int, revision: Revision)? = store.withShardSnapshot(s) { entries, revision in
            shards[s].withLock { st -> (count: Int, revision: Revision)? in
                if since != nil { st.copyInFlight = false }
                guard st.followerRestart, st.follower == follower else { return nil }
                st.followerRestart = false
                let epoch = st.epoch
                if since == nil {
                    sendToFollower(ReplicationMessage(shard: s, from: me, kind: .snapshotBegin), shard: s, follower: follower, epoch: epoch)
                }
                for kv in entries {
                    if let since, kv.version <= since {
                        stats.copyKept.add(1, ordering: .relaxed)
                        // The fingerprint as the value: the follower checks it holds this very entry.
                        let keep = KeyValue(key: kv.key, value: kv.fingerprintBytes, version: kv.version, createRevision: kv.createRevision)
                        sendToFollower(ReplicationMessage(shard: s, from: me, kind: .snapshotKeep, entry: keep), shard: s, follower: follower, epoch: epoch)
                    } else {
                        stats.copyEntries.add(1, ordering: .relaxed)
                        sendToFollower(ReplicationMessage(shard: s, from: me, kind: .snapshotEntry, entry: kv), shard: s, follower: follower, epoch: epoch)
                    }
                }
                let end = max(revision, st.last)
                sendToFollower(ReplicationMessage(shard: s, from: me, kind: .snapshotEnd, revision: end), shard: s, follower: follower, epoch: epoch)
                return (entries.count, end)
            }
        }
        if let sent {
            logger.info("copying shard to a joining node", metadata: [
                "shard": "\(s)", "node": "\(follower.id)", "keys": "\(sent.count)", "revision": "\(sent.revision)",
                "delta": "\(since.map { "since \($0)" } ?? "no")",
            ])
        }
    }

    // MARK: receiving a copy

    /// A copy of the shard starts arriving (`delta`: against what this node holds).
    func beginCopy(shard s: Int, delta: Bool = false) {
        shards[s].withLock { st in
            st.copying = true
            st.last = 0
            st.copySeen = delta ? [] : nil
        }
    }

    /// Notes a key a delta copy named; false when no delta copy runs.
    @discardableResult
    func noteCopied(shard s: Int, key: String) -> Bool {
        shards[s].withLock { st in
            guard st.copySeen != nil else { return false }
            st.copySeen!.insert(key)
            return true
        }
    }

    /// The keys a delta copy named, and the end of that bookkeeping.
    func takeCopySeen(shard s: Int) -> Set<String>? {
        shards[s].withLock { st in
            defer { st.copySeen = nil }
            return st.copySeen
        }
    }

    /// True while a copy of the shard is being received (begun, not yet ended).
    func isCopying(shard s: Int) -> Bool { shards[s].withLock { $0.copying } }

    func endCopy(shard s: Int, revision: Revision) {
        shards[s].withLock { st in
            st.copying = false
            st.last = revision
        }
    }

    // MARK: status

    /// Changes sent but not yet acknowledged, per shard (the replication lag).
    func pendingCounts() -> [Int] { shards.map { $0.withLock { $0.pending.count } } }

    var sentCount: Int { stats.sent.load(ordering: .relaxed) }
    var toldCommittedCount: Int { stats.toldCommitted.load(ordering: .relaxed) }
    /// Entries sent whole in shard copies, and keys a delta copy only confirmed.
    var copyCounts: (entries: Int, kept: Int) { (stats.copyEntries.load(ordering: .relaxed), stats.copyKept.load(ordering: .relaxed)) }
}

final class ReplicationStats: Sendable {
    let sent = Atomic<Int>(0)
    /// Commit notices sent to clients as the tail.
    let toldCommitted = Atomic<Int>(0)
    /// Shard copies sent to joining nodes: entries sent whole, and keys only confirmed (delta).
    let copyEntries = Atomic<Int>(0)
    let copyKept = Atomic<Int>(0)
}

/// A value under its own lock, in a class so that many of them fit in an array.
final class LockedBox<Value: ~Copyable>: Sendable where Value: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: consuming sending Value) { mutex = Mutex(value) }
    func withLock<R, E: Error>(_ body: (inout sending Value) throws(E) -> sending R) throws(E) -> R {
        try mutex.withLock(body)
    }
}

extension Change {
    /// The key a put or delete changes (nil for lease changes).
    var key: String? {
        switch self {
        case .put(let kv): kv.key
        case .delete(let key, _): key
        case .leaseGrant, .leaseRevoke: nil
        }
    }
}
