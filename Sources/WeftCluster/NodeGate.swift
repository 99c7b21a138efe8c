import Foundation
import Logging
import Synchronization
import WeftCore
import WeftTransport
import WeftWire

/// What a cluster node serves, by its current shard map: writes of the shards it heads, reads of
/// the shards it is the tail of (once its predecessor has fenced it in, if it became the tail by
/// joining), the replication stream from its predecessors, and copies of shards it joins.
/// It serves nothing while its membership lease may have run out.
public final class NodeGate: ClusterGate, Sendable {
    struct View {
        var map: ShardMap?
        /// Per shard: reads may be served here.
        var readable: [Bool] = []
        /// Per shard: the epoch a new tail waits for a fence of.
        var awaitingFence: [UInt64?] = []
        /// Per shard: the highest epoch a predecessor has fenced (it may arrive before the map).
        var fenced: [UInt64] = []
        /// Per shard: fences refused in a row because this node lacks changes its predecessor has.
        var behind: [Int: Int] = [:]
    }

    public let me: String
    let store: MemoryStore
    let replication: Replication
    let leases: ClusterLeases
    let logger: Logger
    private let view = Mutex(View())
    /// True while the node's etcd lease is surely valid.
    let serving: @Sendable () -> Bool
    /// Called when a request shows that a newer map exists.
    let stale: @Sendable (UInt64) -> Void
    /// Called when this node completed the copy of a shard it joins.
    let copied: @Sendable (_ shard: Int, _ since: UInt64) -> Void
    /// Called when this node, a member of a shard's chain by a map that knows it as
    /// `incarnation`, finds its copy of the shard incomplete: it must stop serving at once and
    /// be copied in again.
    let broken: @Sendable (_ shard: Int, _ incarnation: Int64, _ reason: String) -> Void

    init(
        me: String, store: MemoryStore, replication: Replication, leases: ClusterLeases, tailReplies: TailReplies = .auto, logger: Logger,
        serving: @escaping @Sendable () -> Bool, stale: @escaping @Sendable (UInt64) -> Void,
        copied: @escaping @Sendable (Int, UInt64) -> Void,
        broken: @escaping @Sendable (Int, Int64, String) -> Void
    ) {
        self.me = me
        self.tailReplies = tailReplies
        self.store = store
        self.replication = replication
        self.leases = leases
        self.logger = logger
        self.serving = serving
        self.stale = stale
        self.copied = copied
        self.broken = broken
    }

    public var map: ShardMap? { view.withLock { $0.map } }

    /// Adopts a newer map (older ones are ignored). Returns whether it was adopted.
    @discardableResult
    func adopt(_ map: ShardMap) -> Bool {
        // Cache leases: a tail knows only the leases it granted itself. No lease outlives its
        // node's membership, so a node dropped from a chain because its membership ended left
        // none behind. Where this node is the tail in `map`, a node dropped from the chain that
        // is still a member (moved off by the coordinator) may have granted leases this node's
        // writes would not wait for; so may nodes of maps this node never saw. Then, for one
        // lease, every write of the shard waits. Set before the map is visible, so that no
        // write under the new map escapes it.
        let old = view.withLock { $0.map }
        if let old, old.epoch >= map.epoch { return false }
        // A map of another shard count (a cluster of other nodes' --shards, or another
        // cluster in the same etcd namespace) cannot be served by this node's shards.
        guard map.shardCount == replication.shardCount else {
            logger.error("ignoring a shard map of another shard count", metadata: [
                "epoch": "\(map.epoch)", "mapShards": "\(map.shardCount)", "nodeShards": "\(replication.shardCount)"])
            return false
        }
        if replication.cacheLeaseMs > 0 {
            for s in 0..<map.shardCount where map.tail(s) == me {
                if let old, old.epoch + 1 == map.epoch, s < old.shardCount,
                   !old.chains[s].contains(where: { !map.chains[s].contains($0) && map.nodes[$0] != nil && map.nodes[$0] == old.nodes[$0] }) {
                    continue
                }
                replication.noteTailStart(shard: s, holdMs: replication.cacheLeaseMs)
            }
        }
        // A node joins a chain once its copy is complete. Still receiving one as a member, it
        // was promoted on the report of an earlier copy that broke off after it (the source then
        // stopped streaming to it and started over): what it holds may lack acknowledged writes.
        for s in 0..<min(map.shardCount, replication.shardCount) where map.chains[s].contains(me) && replication.isCopying(shard: s) {
            broken(s, map.nodes[me]?.incarnation ?? 0, "promoted in epoch \(map.epoch) while a copy of shard \(s) was still arriving")
        }
        let adopted = view.withLock { v -> Bool in
            if let old = v.map, old.epoch >= map.epoch { return false }
            let old = v.map
            if v.fenced.count != map.shardCount { v.fenced = Array(repeating: 0, count: map.shardCount) }
            var readable = Array(repeating: false, count: map.shardCount)
            var awaiting = Array<UInt64?>(repeating: nil, count: map.shardCount)
            for s in 0..<map.shardCount where map.tail(s) == me {
                let wasTail = old.map { s < $0.shardCount && $0.tail(s) == me } ?? false
                let hasPredecessor = map.predecessor(of: me, in: s) != nil
                // A node that becomes the tail behind a predecessor serves reads once that
                // predecessor has fenced it in for this epoch (it has sent everything it
                // acknowledged before); a tail that stays the tail keeps what it waited for.
                let carried = wasTail && v.awaitingFence.indices.contains(s) ? v.awaitingFence[s] : nil
                let need: UInt64? = hasPredecessor ? (wasTail ? carried : map.epoch) : nil
                if let need, v.fenced[s] < need {
                    awaiting[s] = need
                } else {
                    readable[s] = true
                }
            }
            v.map = map
            v.readable = readable
            v.awaitingFence = awaiting
            return true
        }
        if adopted {
            replication.adopt(map)
            // Watches of shards this node no longer replicates would see no more events: ended,
            // so that their clients follow the shard to its new tail.
            if let old {
                for s in 0..<min(old.shardCount, map.shardCount) where old.chains[s].contains(me) && !map.chains[s].contains(me) {
                    store.endWatches(shard: s, error: WeftError(.wrongEpoch, "node \(me) left the chain of shard \(s) in epoch \(map.epoch)"))
                }
            }
        }
        return adopted
    }

    private func wrong(_ what: String, shard: Int, map: ShardMap) -> WeftError {
        WeftError(
            .wrongEpoch,
            "node \(me) is not the \(what) of shard \(shard) in epoch \(map.epoch) (head \(map.head(shard) ?? "none"), tail \(map.tail(shard) ?? "none"))")
    }

    private static let notServing = WeftError(.wrongEpoch, "this node is not serving: its cluster membership is not confirmed")

    // MARK: ClusterGate

    public func decide(_ request: StateRequest, epoch: UInt64, replyAt: ReplyAt? = nil) -> ClusterDecision {
        // Status describes the node whatever its state: a client learns from it that it talks
        // to a cluster (and then routes by the map) even before the node serves.
        if case .status = request { return .serve }
        guard serving() else { return .answer(.failure(Self.notServing)) }
        let (map, readable) = view.withLock { ($0.map, $0.readable) }
        guard let map else { return .answer(.failure(WeftError(.wrongEpoch, "this node has no shard map yet"))) }
        if epoch > map.epoch { stale(epoch) }
        switch request {
        case .status:
            return .serve
        case .get(let key, _, _):
            let s = map.shard(of: key)
            guard map.tail(s) == me else { return .answer(.failure(wrong("tail", shard: s, map: map))) }
            guard readable[s] else {
                return .answer(.failure(WeftError(.wrongEpoch, "node \(me) became the tail of shard \(s) and waits for its predecessor to fence it in")))
            }
            guard replication.cacheLeaseMs > 0 else { return .serve }
            // With caching on, the read checks for a held write under the key's lock.
            guard case .get(_, let range, let since) = request else { return .serve }
            return .later { reply in
                self.tailRead(key, shard: s, lease: false, holder: nil) { result in
                    reply(result.flatMap { kv, _ in Self.shape(kv, key: key, range: range, ifChangedSince: since) })
                }
            }
        case .list(let prefix, let after, let limit, let keysOnly):
            let me = self.me
            // A cluster client lists every tail of its map: a node on another map, or a tail not
            // yet fenced in, would silently leave shards out. It is told to retry instead.
            if epoch != 0 && epoch != map.epoch {
                return .answer(.failure(WeftError(.wrongEpoch, "node \(me) serves epoch \(map.epoch), the list was for \(epoch)")))
            }
            if let s = (0..<map.shardCount).first(where: { map.tail($0) == me && !readable[$0] }) {
                return .answer(.failure(WeftError(.wrongEpoch, "node \(me) became the tail of shard \(s) and waits for its predecessor to fence it in")))
            }
            return .answer(Result { () throws(WeftError) in
                try store.list(prefix: prefix, after: after, limit: limit, keysOnly: keysOnly) { s in
                    s < map.shardCount && map.tail(s) == me && readable[s]
                }
            })
        case .leaseGrant(_, let id) where id == 0:
            // The node picks an id homed in a shard it heads.
            let leases = self.leases
            return .later { reply in leases.execute(request, map: map, reply: reply) }
        case .leaseGrant(_, let id), .leaseKeepAlive(let id), .leaseRevoke(let id):
            let s = map.home(ofLease: id)
            guard map.head(s) == me else { return .answer(.failure(wrong("head", shard: s, map: map))) }
            let leases = self.leases
            return .later { reply in leases.execute(request, map: map, reply: reply) }
        case .put(let key, _, _, _), .writeRange(let key, _, _, _), .append(let key, _, _), .add(let key, _), .delete(let key, _):
            let s = map.shard(of: key)
            guard map.head(s) == me else { return .answer(.failure(wrong("head", shard: s, map: map))) }
            // A write that fails (a version mismatch, a delete of an absent key) was decided on
            // the head's state, which may hold writes not yet committed: it is answered once
            // they are, so that it is ordered after them as every reader sees them.
            let store = self.store
            let replication = self.replication
            let run: @Sendable (@escaping @Sendable (Result<StateResponse, WeftError>) -> Void) -> Void = { reply in
                store.execute(request, replyAt: replyAt) { result in
                    guard case .failure = result else { return reply(result) }
                    replication.whenCommitted(shard: s, revision: store.shardRevision(s)) { reply(result) }
                }
            }
            guard case .put(_, _, _, let lease) = request, lease != 0 else { return .later(run: run) }
            let leases = self.leases
            return .later { reply in leases.put(under: lease, map: map, run: run, reply: reply) }
        }
    }

    /// A key watch runs at its shard's tail; a prefix watch names one shard and runs at its
    /// tail (a cluster client watches a prefix shard by shard: no node holds every shard).
    public func admitWatch(_ target: WatchTarget, epoch: UInt64, shard: Int?) -> WeftError? {
        guard serving() else { return Self.notServing }
        guard let map = view.withLock({ $0.map }) else { return WeftError(.unavailable, "this node has no shard map yet") }
        if epoch > map.epoch { stale(epoch) }
        let s: Int
        switch target {
        case .key(let key):
            s = map.shard(of: key)
        case .prefix:
            guard let shard else {
                return WeftError(.invalidArgument, "a prefix watch on a cluster node names a shard (a cluster client watches every shard at its tail)")
            }
            guard shard >= 0, shard < map.shardCount else { return WeftError(.invalidArgument, "no shard \(shard)") }
            s = shard
        }
        return map.tail(s) == me ? nil : wrong("tail", shard: s, map: map)
    }

    public func replicate(_ message: ReplicationMessage, epoch: UInt64, completion: @escaping @Sendable (Result<Revision, WeftError>) -> Void) {
        guard serving() else {
            completion(.failure(Self.notServing))
            return
        }
        guard let map = view.withLock({ $0.map }) else {
            completion(.failure(WeftError(.unavailable, "this node has no shard map yet")))
            return
        }
        let s = message.shard
        guard s >= 0, s < map.shardCount, s < replication.shardCount else {
            completion(.failure(WeftError(.invalidArgument, "no shard \(s)")))
            return
        }
        switch message.kind {
        case .leaseCheck:
            return completion(leases.answerCheck(LeaseID(bitPattern: message.revision), home: s, map: map))
        case .leaseEnd:
            return leases.endHere(LeaseID(bitPattern: message.revision)) { completion(.success(Revision($0))) }
        default:
            break
        }
        let isPredecessor = map.predecessor(of: me, in: s) == message.from
        let join = map.joining[s]
        let isCopySource = join?.node == me && join?.source == message.from
        switch message.kind {
        case .put, .delete, .fence:
            guard isPredecessor || isCopySource else {
                if epoch > map.epoch { stale(epoch) }
                completion(.failure(WeftError(.wrongEpoch, "node \(message.from) is not the predecessor of \(me) for shard \(s) in epoch \(map.epoch)")))
                return
            }
        case .leaseCheck, .leaseEnd:
            return
        case .snapshotBegin, .snapshotEntry, .snapshotEnd, .snapshotDelta, .snapshotKeep:
            guard isCopySource, !map.chains[s].contains(me) else {
                if epoch > map.epoch { stale(epoch) }
                completion(.failure(WeftError(.wrongEpoch, "node \(me) is not copying shard \(s) from \(message.from) in epoch \(map.epoch)")))
                return
            }
        }
        let replication = self.replication
        switch message.kind {
        case .leaseCheck, .leaseEnd:
            break  // answered above
        case .put, .delete:
            guard let entry = message.entry else {
                completion(.failure(WeftError(.malformedRequest, "replicate without an entry")))
                return
            }
            let change: Change = message.kind == .put ? .put(entry) : .delete(key: entry.key, revision: message.revision)
            store.applyReplicated(.change(change, previous: message.previous, replyAt: message.kind == .put ? message.replyAt : nil)) { result in
                switch result {
                case .success:
                    replication.whenCommitted(shard: s, revision: message.revision) { completion(.success(message.revision)) }
                case .failure(let error):
                    self.logger.debug("replicated change refused", metadata: [
                        "shard": "\(s)", "from": "\(message.from)", "revision": "\(message.revision)", "previous": "\(message.previous)", "error": "\(error)",
                    ])
                    completion(.failure(error))
                }
            }
        case .fence:
            // The predecessor fences this node in only if it holds every change the predecessor
            // has (all sent before the fence, on the same connection). A node promoted on a copy
            // whose stream then broke would otherwise serve reads that miss acknowledged writes.
            let have = store.shardRevision(s)
            let copying = replication.isCopying(shard: s)
            if copying || have < message.revision {
                let reason = copying
                    ? "node \(me) is still receiving a copy of shard \(s)"
                    : "node \(me) holds shard \(s) up to revision \(have), its predecessor \(message.from) up to \(message.revision)"
                // Refused a few times in a row (the predecessor sends what is pending before
                // every fence, so a change lost to a dropped connection is made good at once),
                // the node lacks changes its predecessor no longer has as pending: copied anew.
                let refusals = view.withLock { v -> Int in
                    v.behind[s, default: 0] += 1
                    return v.behind[s]!
                }
                if map.chains[s].contains(me), copying || refusals >= 3 {
                    broken(s, map.nodes[me]?.incarnation ?? 0, reason)
                }
                completion(.failure(WeftError(.unavailable, "fence refused: \(reason)")))
                return
            }
            let fenced = view.withLock { v -> Bool in
                v.behind[s] = nil
                if v.fenced.indices.contains(s) { v.fenced[s] = max(v.fenced[s], epoch) }
                guard v.awaitingFence.indices.contains(s), let want = v.awaitingFence[s], epoch >= want else { return false }
                v.awaitingFence[s] = nil
                v.readable[s] = true
                return true
            }
            if fenced {
                logger.debug("fenced in as tail", metadata: ["shard": "\(s)", "epoch": "\(epoch)"])
            }
            replication.whenCommitted(shard: s, revision: message.revision) { completion(.success(message.revision)) }
        case .snapshotBegin:
            replication.beginCopy(shard: s)
            store.applyReplicated(.snapshotBegin(shard: s)) { result in completion(result.map { _ in 0 }) }
        case .snapshotDelta:
            // Only a node whose data came back from disk catches up by delta; one that kept its
            // memory through a lost lease may hold writes that were never committed.
            guard replication.acceptsDeltaCopy else {
                completion(.failure(WeftError(.invalidArgument, "node \(me) takes whole copies only (not durable, or it lost its membership while running)")))
                return
            }
            replication.beginCopy(shard: s, delta: true)
            let revision = store.shardRevision(s)
            logger.debug("delta copy begins", metadata: ["shard": "\(s)", "from": "\(message.from)", "revision": "\(revision)"])
            completion(.success(revision))
        case .snapshotEntry:
            guard let entry = message.entry else {
                completion(.failure(WeftError(.malformedRequest, "snapshot entry without an entry")))
                return
            }
            replication.noteCopied(shard: s, key: entry.key)
            store.applyReplicated(.snapshotEntry(entry)) { result in completion(result.map { _ in entry.version }) }
        case .snapshotKeep:
            guard let entry = message.entry else {
                completion(.failure(WeftError(.malformedRequest, "snapshot keep without an entry")))
                return
            }
            replication.noteCopied(shard: s, key: entry.key)
            // The source sends the entry's fingerprint as the value.
            let fingerprint = KeyValue.fingerprint(fromBytes: entry.value)
            store.applyReplicated(.snapshotKeep(key: entry.key, version: entry.version, fingerprint: fingerprint)) { result in
                completion(result.map { _ in entry.version })
            }
        case .snapshotEnd:
            let copied = self.copied
            let since = join?.since ?? 0
            let store = self.store
            let finish: @Sendable () -> Void = {
                store.applyReplicated(.snapshotEnd(shard: s, revision: message.revision)) { result in
                    guard case .success = result else { return completion(result.map { _ in message.revision }) }
                    replication.endCopy(shard: s, revision: message.revision)
                    self.logger.debug("copy received", metadata: ["shard": "\(s)", "from": "\(message.from)", "revision": "\(message.revision)"])
                    // Joins the chain only once the copy is on disk (with --data): as a member it
                    // may be the one a whole-cluster restart starts the shard again from.
                    replication.whenLogged(shard: s) {
                        copied(s, since)
                        completion(.success(message.revision))
                    }
                }
            }
            if let seen = replication.takeCopySeen(shard: s) {
                // A delta copy: what this node holds that the copy did not name is gone.
                store.applyReplicated(.snapshotPrune(shard: s, keep: seen)) { _ in finish() }
            } else {
                finish()
            }
        }
    }

    public func cacheAcked(seq: UInt64) {
        replication.cacheAcked(seq: seq)
    }

    /// Sampled by the node (see `CPUIdleGauge`).
    let cpu = CPUIdleGauge()
    /// Tail replies are admitted while at least this share of the machine's CPU is idle.
    static let tailReplyIdlePercentMin = 25

    let tailReplies: TailReplies

    public var relaysTailReplies: Bool { !replication.isDurable }

    public var admitsTailReplies: Bool {
        guard relaysTailReplies else { return false }
        switch tailReplies {
        case .auto: return cpu.idlePercent >= Self.tailReplyIdlePercentMin
        case .always: return true
        case .never: return false
        }
    }

    public func openCommitFeed(client: UInt64, feed: any CommitFeed) {
        replication.openCommitFeed(client: client, feed: feed)
    }

    public func closeCommitFeed(client: UInt64, feed: any CommitFeed) {
        replication.closeCommitFeed(client: client, feed: feed)
    }

    public func cacheGet(
        _ key: String, epoch: UInt64, holder: any CacheHolder,
        completion: @escaping @Sendable (Result<(KeyValue, UInt32), WeftError>) -> Void
    ) {
        switch decide(.get(key: key), epoch: epoch) {
        case .answer(.failure(let error)): completion(.failure(error))
        case .answer(.success): completion(.failure(WeftError(.internalError, "unexpected answer")))
        case .serve, .later:
            tailRead(key, shard: MemoryStore.shard(of: key, shardCount: store.shardCount), lease: true, holder: holder, completion)
        }
    }

    /// Reads `key` at the tail under its shard lock: if a write of it is held for cache leases,
    /// waits for that write first (else a reader could see the new value while a cache still
    /// serves the old); with `lease`, records a cache lease on it.
    private func tailRead(
        _ key: String, shard s: Int, lease: Bool, holder: (any CacheHolder)?, _ completion: @escaping @Sendable (Result<(KeyValue, UInt32), WeftError>) -> Void
    ) {
        // Checked again here: a read that waited for a held write may find the map changed.
        guard serving() else {
            completion(.failure(Self.notServing))
            return
        }
        let (map, readable) = view.withLock { ($0.map, $0.readable) }
        guard let map, s < map.shardCount, map.tail(s) == me, readable.indices.contains(s), readable[s] else {
            completion(.failure(WeftError(.wrongEpoch, "node \(me) is no longer the tail of shard \(s)")))
            return
        }
        let replication = self.replication
        enum Outcome { case value(KeyValue, UInt32), absent, held }
        let outcome: Outcome
        do throws(WeftError) {
            outcome = try store.read(key) { kv -> Outcome in
                if replication.isHeld(shard: s, key: key) { return .held }
                guard let kv else { return .absent }
                return .value(kv, lease ? replication.noteCached(shard: s, key: key, holder: holder) : 0)
            }
        } catch {
            completion(.failure(error))
            return
        }
        switch outcome {
        case .value(let kv, let ms): completion(.success((kv, ms)))
        case .absent: completion(.failure(.notFound(key)))
        case .held: replication.whenNotHeld(shard: s, key: key) { self.tailRead(key, shard: s, lease: lease, holder: holder, completion) }
        }
    }

    /// A get's answer from the whole value: a byte range, or `notModified`.
    static func shape(_ kv: KeyValue, key: String, range: ByteRange?, ifChangedSince: Revision?) -> Result<StateResponse, WeftError> {
        if let since = ifChangedSince, kv.version <= since { return .success(.notModified(version: kv.version)) }
        guard let range else { return .success(.value(kv)) }
        let length = UInt64(kv.value.count)
        guard range.offset <= length else {
            return .failure(WeftError(.outOfRange, "offset \(range.offset) is past the end of '\(key)' (\(length) bytes)"))
        }
        let end = range.offset + min(range.length, length - range.offset)
        var out = kv
        out.value = Array(kv.value[Int(range.offset)..<Int(end)])
        return .success(.value(out))
    }

    public func shardMap() -> (epoch: UInt64, json: [UInt8]) {
        guard let map = view.withLock({ $0.map }) else { return (0, Array("{}".utf8)) }
        return (map.epoch, Self.encode(map))
    }

    public func statusJSON() -> String {
        let (map, readable) = view.withLock { ($0.map, $0.readable) }
        let lag = replication.pendingCounts()
        let status = NodeStatus(
            node: me, serving: serving(), epoch: map?.epoch ?? 0, nodes: map?.nodes ?? [:],
            chains: map?.chains ?? [], joining: map?.joining ?? [],
            headOf: map.map { m in (0..<m.shardCount).filter { m.head($0) == me } } ?? [],
            tailOf: map.map { m in (0..<m.shardCount).filter { m.tail($0) == me && readable[$0] } } ?? [],
            pendingChanges: lag.reduce(0, +), maxShardLag: lag.max() ?? 0,
            copyEntriesSent: replication.copyCounts.entries, copyKeysKept: replication.copyCounts.kept,
            commitNoticesSent: replication.toldCommittedCount, cpuIdlePercent: cpu.idlePercent)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(status)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func encode(_ map: ShardMap) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(map)).map(Array.init) ?? []
    }
}

/// A node's view of the cluster, as `weft status` shows it.
public struct NodeStatus: Codable, Sendable {
    public var node: String
    public var serving: Bool
    public var epoch: UInt64
    public var nodes: [String: ShardMap.Node]
    public var chains: [[String]]
    public var joining: [ShardMap.Join?]
    public var headOf: [Int]
    public var tailOf: [Int]
    /// Changes this node sent down its chains that are not yet acknowledged (replication lag).
    public var pendingChanges: Int
    public var maxShardLag: Int
    /// Shard copies this node sent: entries sent whole, and keys a delta copy only confirmed.
    public var copyEntriesSent: Int
    public var copyKeysKept: Int
    /// Puts this node, as their tail, told their clients were committed (see `ReplyAt`).
    public var commitNoticesSent: Int = 0
    /// The machine's idle CPU share over the last 100 ms: tail replies are admitted at 25% or more.
    public var cpuIdlePercent: Int = 100
}
