import Logging
import Synchronization
import WeftCore
import WeftWire

/// A cluster's leases, as one node takes part in them.
///
/// A lease is a record (`InternalKeys.leaseRecord`) in its home shard, the shard the record's
/// key hashes to, holding its TTL; being a key, it is replicated down the home shard's chain,
/// copied to joining replicas and kept on disk. The head of the home shard keeps the lease's
/// clock: it grants (puts the record), keeps alive (restarts the clock) and ends the lease
/// (revoke, or the clock ran out): it deletes the record, then tells every node to delete the
/// lease's keys in the shards it heads (`leaseEnd`). A head that takes over a home shard starts
/// a fresh clock for each of its records, as etcd's new leader does.
///
/// A key put under a lease is put at its own shard's head, which first asks the lease's home
/// whether the lease is live (`leaseCheck`). Every replica records which lease each key is
/// under, so a later head can still end them. A node that missed an end (partitioned, or it
/// became head after it) finds out by sweeping: once a second it asks the home of each lease
/// its headed shards' keys are under, and ends those that are gone. A put that raced an end
/// (checked before, applied after the node's deletes) is ended again at once.
final class ClusterLeases: Sendable {
    struct State {
        /// Leases homed in shards this node heads: when each runs out (monotonic ms).
        var deadlines: [LeaseID: Int64] = [:]
        /// The map epoch the deadlines were last completed from the records for.
        var scannedEpoch: UInt64 = 0
        /// Leases being ended by this node (so that a tick does not end one twice).
        var ending: Set<LeaseID> = []
        /// Leases this node knows have ended (the newest `endedMax`, oldest first in `order`),
        /// each with how many of its keys this node has deleted.
        var ended: [LeaseID: Int] = [:]
        var order: [LeaseID] = []
        /// Ends running on this node (see `endHere`).
        var endingHere: [LeaseID: EndingHere] = [:]
        var lastSweepMs: Int64 = 0

        mutating func noteEnded(_ id: LeaseID) {
            guard ended[id] == nil else { return }
            ended[id] = 0
            order.append(id)
            if order.count > ClusterLeases.endedMax { ended[order.removeFirst()] = nil }
        }
    }

    /// The deletes of one lease's keys running on this node, and who waits for them all.
    struct EndingHere {
        var running = 0
        var waiters: [@Sendable (Int) -> Void] = []
    }

    static let endedMax = 4096
    static let sweepMs: Int64 = 1_000

    let me: String
    let store: MemoryStore
    let peers: PeerPool
    let logger: Logger
    private let currentMap: @Sendable () -> ShardMap?
    private let state = Mutex(State())
    private let nowMs = MemoryStore.monotonicMilliseconds()

    init(me: String, store: MemoryStore, peers: PeerPool, logger: Logger, map: @escaping @Sendable () -> ShardMap?) {
        self.me = me
        self.store = store
        self.peers = peers
        self.logger = logger
        self.currentMap = map
    }

    typealias Reply = @Sendable (Result<StateResponse, WeftError>) -> Void

    /// Lease operations this node answers as head of their home shard: grant (id 0: an id of a
    /// shard this node heads), keep-alive and revoke.
    func execute(_ request: StateRequest, map: ShardMap, reply: @escaping Reply) {
        switch request {
        case .leaseGrant(let ttl, let id):
            grant(ttlSeconds: ttl, id: id, map: map, reply: reply)
        case .leaseKeepAlive(let id):
            reply(Result { () throws(WeftError) in .lease(id: id, ttlSeconds: try keepAlive(id)) })
        case .leaseRevoke(let id):
            guard store.record(InternalKeys.leaseRecord(id)) != nil else { return reply(.failure(Self.notFound(id))) }
            end(id, map: map) { deleted in reply(.success(.leaseRevoked(id: id, keysDeleted: deleted))) }
        default:
            reply(.failure(WeftError(.internalError, "not a lease operation")))
        }
    }

    private func grant(ttlSeconds: Int64, id: LeaseID, map: ShardMap, reply: @escaping Reply) {
        guard ttlSeconds >= 1 && ttlSeconds <= store.limits.leaseTTLSecondsMax else {
            return reply(.failure(WeftError(.invalidArgument, "lease TTL \(ttlSeconds) s is not in 1...\(store.limits.leaseTTLSecondsMax)")))
        }
        guard id >= 0 else { return reply(.failure(WeftError(.invalidArgument, "lease id \(id) is negative"))) }
        var chosen = id
        if chosen == 0 {
            // An id whose home is a shard this node heads (there is one: the request came here).
            guard (0..<map.shardCount).contains(where: { map.head($0) == me }) else {
                return reply(.failure(WeftError(.wrongEpoch, "node \(me) heads no shard in epoch \(map.epoch)")))
            }
            repeat { chosen = LeaseID.random(in: 1...LeaseID.max) } while map.head(map.home(ofLease: chosen)) != me
        }
        let live = state.withLock { $0.deadlines.count }
        guard live < store.limits.leasesMax else {
            return reply(.failure(WeftError(.overloaded, "\(live) leases are live here, the maximum is \(store.limits.leasesMax)")))
        }
        let id = chosen
        store.putRecord(InternalKeys.leaseRecord(id), value: InternalKeys.ttlValue(ttlSeconds), ifVersion: 0) { result in
            switch result {
            case .success:
                let deadline = self.nowMs() + ttlSeconds * 1000
                self.state.withLock { $0.deadlines[id] = deadline }
                self.logger.debug("lease granted", metadata: ["lease": "\(id)", "ttl": "\(ttlSeconds)"])
                reply(.success(.lease(id: id, ttlSeconds: ttlSeconds)))
            case .failure(let error) where error.code == .versionMismatch:
                reply(.failure(WeftError(.invalidArgument, "lease \(id) already exists")))
            case .failure(let error):
                reply(.failure(error))
            }
        }
    }

    /// Restarts the clock of a live lease homed here; returns its TTL.
    private func keepAlive(_ id: LeaseID) throws(WeftError) -> Int64 {
        let ttl: Int64
        do throws(WeftError) {
            ttl = try liveTTL(id)
        } catch {
            logger.debug("lease keep-alive refused", metadata: ["lease": "\(id)", "error": "\(error)"])
            throw error
        }
        let deadline = nowMs() + ttl * 1000
        state.withLock { $0.deadlines[id] = deadline }
        return ttl
    }

    /// The TTL of lease `id` if it is live here (its record exists and its clock runs).
    private func liveTTL(_ id: LeaseID) throws(WeftError) -> Int64 {
        guard let record = store.record(InternalKeys.leaseRecord(id)), let ttl = InternalKeys.ttl(fromValue: record.value) else {
            throw Self.notFound(id)
        }
        let now = nowMs()
        let expired = state.withLock { s in s.ending.contains(id) || (s.deadlines[id].map { $0 <= now } ?? false) }
        if expired { throw Self.notFound(id) }
        return ttl
    }

    private static func notFound(_ id: LeaseID) -> WeftError { WeftError(.leaseNotFound, "lease \(id) not found") }

    // MARK: keys under a lease

    /// Whether lease `id` is live, asked of its home shard's head (this node or another);
    /// completes with nil if it is, else the error (`leaseNotFound`, or `wrongEpoch` when the
    /// home cannot answer now).
    func check(_ id: LeaseID, map: ShardMap, completion: @escaping @Sendable (WeftError?) -> Void) {
        if state.withLock({ $0.ended[id] != nil }) { return completion(Self.notFound(id)) }
        let home = map.home(ofLease: id)
        guard let head = map.head(home) else {
            return completion(WeftError(.wrongEpoch, "lease \(id)'s home shard \(home) has no head in epoch \(map.epoch)"))
        }
        if head == me {
            do throws(WeftError) {
                _ = try liveTTL(id)
                completion(nil)
            } catch {
                completion(error)
            }
            return
        }
        guard let address = map.address(of: head) else {
            return completion(WeftError(.wrongEpoch, "no address for node \(head) in epoch \(map.epoch)"))
        }
        let message = ReplicationMessage(shard: home, from: me, kind: .leaseCheck, revision: UInt64(bitPattern: id))
        peers.call(message, to: address, epoch: map.epoch) { result in
            switch result {
            case .success: completion(nil)
            case .failure(let error) where error.code == .leaseNotFound: completion(error)
            case .failure(let error):
                completion(WeftError(.wrongEpoch, "cannot ask the home of lease \(id) (node \(head)): \(error.message)"))
            }
        }
    }

    /// Answers another node's `leaseCheck` as the head of the lease's home shard.
    func answerCheck(_ id: LeaseID, home: Int, map: ShardMap) -> Result<Revision, WeftError> {
        guard home >= 0, home < map.shardCount, map.head(home) == me else {
            return .failure(WeftError(.wrongEpoch, "node \(me) is not the head of shard \(home) in epoch \(map.epoch)"))
        }
        guard map.home(ofLease: id) == home else { return .failure(WeftError(.invalidArgument, "lease \(id) is not homed in shard \(home)")) }
        return Result { () throws(WeftError) in Revision(try liveTTL(id)) }
    }

    /// Puts a key under lease `id` at its shard's head: once the lease's home confirms it is
    /// live, runs `put` on the store.
    func put(under id: LeaseID, map: ShardMap, run put: @escaping @Sendable (@escaping Reply) -> Void, reply: @escaping Reply) {
        check(id, map: map) { error in
            if let error { return reply(.failure(error)) }
            self.store.adoptLease(id)
            put(reply)
            // The lease ended between the check and the put (this node's deletes ran before the
            // key was attached): end it here again, which takes the new key too.
            if self.state.withLock({ $0.ended[id] != nil }) { self.endHere(id) { _ in } }
        }
    }

    /// Ends lease `id` on this node: deletes its keys in the shards this node heads. Completes
    /// once those deletes, and those of every other end of the lease running here, are
    /// committed, with how many of the lease's keys this node has deleted in all.
    ///
    /// A lease can be ended here by several paths at once (the home's `leaseEnd`, this node's
    /// sweep, a put that raced the end): whichever deleted a key, the revoke that asked counts
    /// it, and answers only once it is committed.
    func endHere(_ id: LeaseID, completion: @escaping @Sendable (Int) -> Void) {
        state.withLock { s in
            s.noteEnded(id)
            s.endingHere[id, default: EndingHere()].running += 1
            s.endingHere[id]!.waiters.append(completion)
        }
        let map = currentMap()
        let me = self.me
        let finish: @Sendable (Int) -> Void = { deleted in
            let (waiters, total) = self.state.withLock { s -> ([@Sendable (Int) -> Void], Int) in
                let total = (s.ended[id] ?? 0) + deleted
                if s.ended[id] != nil { s.ended[id] = total }
                s.endingHere[id]!.running -= 1
                guard s.endingHere[id]!.running == 0 else { return ([], total) }
                return (s.endingHere.removeValue(forKey: id)!.waiters, total)
            }
            self.logger.debug("lease ended here", metadata: ["lease": "\(id)", "deleted": "\(deleted)", "total": "\(total)", "epoch": "\(map?.epoch ?? 0)"])
            for waiter in waiters { waiter(total) }
        }
        guard let map else { return finish(0) }
        store.endLease(id, inShards: { $0 < map.shardCount && map.head($0) == me }, completion: finish)
    }

    /// Ends lease `id` homed here: deletes its record, then has every node delete its keys.
    /// Completes with how many keys were deleted.
    private func end(_ id: LeaseID, map: ShardMap, completion: @escaping @Sendable (Int) -> Void) {
        state.withLock { _ = $0.ending.insert(id) }
        store.deleteRecord(InternalKeys.leaseRecord(id)) { result in
            if case .failure(let error) = result, error.code != .notFound {
                // Not ended (the record's delete did not commit): the clock runs on.
                self.logger.warning("lease record not deleted", metadata: ["lease": "\(id)", "error": "\(error)"])
                self.state.withLock { _ = $0.ending.remove(id) }
                return completion(0)
            }
            self.state.withLock { s in
                s.deadlines[id] = nil
                s.ending.remove(id)
            }
            self.broadcastEnd(id, map: self.currentMap() ?? map, completion: completion)
        }
    }

    private func broadcastEnd(_ id: LeaseID, map: ShardMap, completion: @escaping @Sendable (Int) -> Void) {
        let others = map.nodes.filter { $0.key != me }.map(\.value.address)
        let tally = Tally(expecting: others.count + 1, done: completion)
        endHere(id, completion: tally.add)
        let message = ReplicationMessage(shard: 0, from: me, kind: .leaseEnd, revision: UInt64(bitPattern: id))
        for address in others {
            peers.call(message, to: address, epoch: map.epoch) { result in
                if case .failure(let error) = result {
                    // Its sweep finds the lease gone within a second of serving again.
                    self.logger.debug("lease end not delivered", metadata: ["lease": "\(id)", "peer": "\(address)", "error": "\(error)"])
                }
                tally.add(Int((try? result.get()) ?? 0))
            }
        }
    }

    // MARK: the clock

    /// Called a few times a second while the node serves: starts clocks for records of home
    /// shards this node now heads, ends leases whose clock ran out, and sweeps once a second.
    func tick() {
        guard let map = currentMap() else { return }
        let me = self.me
        let now = nowMs()
        let headed = (0..<map.shardCount).filter { map.head($0) == me }
        let rescan = state.withLock { $0.scannedEpoch != map.epoch }
        var records: [LeaseID: Int64]?
        if rescan {
            var found: [LeaseID: Int64] = [:]
            for s in headed {
                for kv in store.records(prefix: InternalKeys.leasePrefix, shard: s) {
                    if let id = InternalKeys.lease(ofRecord: kv.key), let ttl = InternalKeys.ttl(fromValue: kv.value) { found[id] = ttl }
                }
            }
            records = found
        }
        let (due, sweep, started) = state.withLock { s -> ([LeaseID], Bool, [LeaseID]) in
            var started: [LeaseID] = []
            if let records {
                s.scannedEpoch = map.epoch
                // Leases homed in shards another node heads now are its to keep. (Not "leases
                // without a record in the scan": one granted since then has its clock already.)
                s.deadlines = s.deadlines.filter { map.head(map.home(ofLease: $0.key)) == me }
                for (id, ttl) in records where s.deadlines[id] == nil {
                    s.deadlines[id] = now + ttl * 1000
                    started.append(id)
                }
            }
            let due = s.deadlines.filter { $0.value <= now && !s.ending.contains($0.key) }.map(\.key)
            let sweep = now - s.lastSweepMs >= Self.sweepMs
            if sweep { s.lastSweepMs = now }
            return (due, sweep, started)
        }
        if !started.isEmpty {
            logger.debug("lease clocks started as the home's head", metadata: ["leases": "\(started)", "epoch": "\(map.epoch)"])
        }
        for id in due {
            logger.debug("lease expired", metadata: ["lease": "\(id)"])
            end(id, map: map) { _ in }
        }
        if sweep { self.sweep(map: map, headed: Set(headed)) }
    }

    /// Ends the leases that keys of headed shards are under and whose home says are gone.
    private func sweep(map: ShardMap, headed: Set<Int>) {
        store.pruneAdoptedLeases()
        for id in store.attachedLeases(inShards: { headed.contains($0) }) {
            check(id, map: map) { error in
                guard let error, error.code == .leaseNotFound else { return }
                self.logger.debug("lease found ended by sweep", metadata: ["lease": "\(id)", "error": "\(error)"])
                self.endHere(id) { _ in }
            }
        }
    }
}
