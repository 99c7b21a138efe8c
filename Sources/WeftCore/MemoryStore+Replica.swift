/// What a replica does with a change that another replica made (chain replication), or with a
/// shard copy. Changes keep the revision they were given at the head of the chain.
public enum ReplicaApply: Sendable, Equatable {
    /// A change; `previous` is the revision of the shard's change before it, so a replica that
    /// missed one refuses it (`unavailable`) instead of applying past a gap.
    /// `replyAt`: the put's client, whom the chain's tail tells once it is committed.
    case change(Change, previous: Revision, replyAt: ReplyAt? = nil)
    /// A shard copy begins: the shard's keys are dropped (not logged, no watch events).
    case snapshotBegin(shard: Int)
    /// One key of a shard copy (logged, no watch event).
    case snapshotEntry(KeyValue)
    /// The copy is complete up to `revision`.
    case snapshotEnd(shard: Int, revision: Revision)
    /// A delta copy: the key must be here at exactly this version (`versionMismatch` if not).
    /// `fingerprint` (of the value and create revision, see `KeyValue.fingerprint`): nil checks
    /// the version only.
    case snapshotKeep(key: String, version: Revision, fingerprint: UInt64?)
    /// A delta copy ends: the shard's keys not in `keep` are deleted (logged, no watch events).
    case snapshotPrune(shard: Int, keep: Set<String>)
}

extension MemoryStore {
    /// Applies a change or a piece of a shard copy made elsewhere. A change goes through the
    /// change log (so down the chain, and to disk) and to watchers like a local mutation, and is
    /// answered once the log is done. A change at or below the shard's revision is already here:
    /// it is answered at once without applying it again.
    ///
    /// Answers `.written(version: shard revision after it, length: 0)`.
    public func applyReplicated(_ item: ReplicaApply, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        switch item {
        case .change(let change, let previous, let replyAt):
            applyChange(change, previous: previous, replyAt: replyAt, completion: completion)
        case .snapshotBegin(let index):
            guard index >= 0, index < shardCount else {
                completion(.failure(WeftError(.invalidArgument, "no shard \(index)")))
                return
            }
            let dropped: [(ByteKey, LeaseID)] = shards[index].state.withLock { state in
                let old = state.entries.map { ($0.key, $0.value.lease) }
                state = ShardState()
                return old
            }
            leases.withLock { table in
                for (key, lease) in dropped where lease != 0 { table.move(key, from: lease, to: 0) }
            }
            completion(.success(.written(version: 0, length: 0)))
        case .snapshotEntry(let kv):
            mutate(kv.key, completion: completion, validated: InternalKeys.isInternal(kv.key), publish: false) { (state, byteKey, _) throws(WeftError) in
                let old = state.entries[byteKey]
                attach(byteKey, from: old?.lease ?? 0, to: kv.lease)
                state.entries[byteKey] = StoredEntry(value: kv.value, version: kv.version, createRevision: kv.createRevision, lease: kv.lease)
                state.valueBytes += kv.value.count - (old?.value.count ?? 0)
                raiseRevision(to: kv.version)
                return .put(kv, response: .written(version: kv.version, length: UInt64(kv.value.count)))
            }
        case .snapshotKeep(let key, let version, let fingerprint):
            // The version alone does not prove the entry is the source's: a head that died with
            // writes not yet committed may have used revisions its successor as head used again
            // for other writes, and this node may hold one of those writes (on disk, or in
            // memory kept through a lost lease). The fingerprint tells them apart.
            completion(Result { () throws(WeftError) in
                let (have, same) = try read(key) { kv in (kv?.version ?? 0, fingerprint == nil || kv?.fingerprint == fingerprint) }
                guard have == version, same else { throw .versionMismatch(key, expected: version, actual: have) }
                return .written(version: version, length: 0)
            })
        case .snapshotPrune(let index, let keep):
            guard index >= 0, index < shardCount else {
                completion(.failure(WeftError(.invalidArgument, "no shard \(index)")))
                return
            }
            let stale = shards[index].state.withLock { state in state.entries.keys.map(\.string).filter { !keep.contains($0) } }
            for key in stale {
                mutate(key, completion: { _ in }, validated: true, publish: false) { (state, byteKey, takeRevision) throws(WeftError) in
                    guard let old = state.remove(byteKey) else { throw .notFound(key) }
                    if old.lease != 0 { leases.withLock { $0.move(byteKey, from: old.lease, to: 0) } }
                    let revision = takeRevision()
                    return AppliedMutation(
                        change: .delete(key: key, revision: revision),
                        event: WatchEvent(kind: .delete, kv: KeyValue(key: key, value: [], version: revision, createRevision: 0)),
                        response: .written(version: revision, length: 0))
                }
            }
            completion(.success(.written(version: UInt64(stale.count), length: 0)))
        case .snapshotEnd(let index, let revision):
            guard index >= 0, index < shardCount else {
                completion(.failure(WeftError(.invalidArgument, "no shard \(index)")))
                return
            }
            let now = shards[index].state.withLock { state in
                // After a copy the shard is exactly the source's at `revision`: a higher revision
                // left from writes this node made before (and that were never committed) would
                // make it take the source's next changes for duplicates and skip them.
                state.revision = revision
                return state.revision
            }
            raiseRevision(to: revision)
            completion(.success(.written(version: now, length: 0)))
        }
    }

    private func applyChange(_ change: Change, previous: Revision, replyAt: ReplyAt?, completion: @escaping Completion) {
        let key: String
        let revision: Revision
        switch change {
        case .put(let kv): (key, revision) = (kv.key, kv.version)
        case .delete(let k, let r): (key, revision) = (k, r)
        case .leaseGrant, .leaseRevoke:
            completion(.failure(WeftError(.invalidArgument, "lease changes are not replicated per shard")))
            return
        }
        let index = Self.shard(of: key, shardCount: shardCount)
        let duplicate: Revision? = shards[index].state.withLock { $0.revision >= revision ? $0.revision : nil }
        if let duplicate {
            completion(.success(.written(version: duplicate, length: 0)))
            return
        }
        mutate(key, completion: completion, validated: InternalKeys.isInternal(key), replyAt: replyAt) { (state, byteKey, _) throws(WeftError) in
            guard state.revision < revision else {
                // Applied meanwhile (by another stream): nothing to do. Answered as a gap so the
                // sender re-checks; this is rare.
                throw WeftError(.unavailable, "shard \(index) is already at revision \(state.revision) ≥ \(revision)")
            }
            guard previous <= state.revision else {
                throw WeftError(.unavailable, "shard \(index) is at revision \(state.revision); the change follows \(previous): a gap")
            }
            raiseRevision(to: revision)
            switch change {
            case .put(let kv):
                let old = state.entries[byteKey]
                attach(byteKey, from: old?.lease ?? 0, to: kv.lease)
                state.entries[byteKey] = StoredEntry(value: kv.value, version: kv.version, createRevision: kv.createRevision, lease: kv.lease)
                state.valueBytes += kv.value.count - (old?.value.count ?? 0)
                return .put(kv, response: .written(version: revision, length: UInt64(kv.value.count)))
            default:
                if let old = state.remove(byteKey), old.lease != 0 { leases.withLock { $0.move(byteKey, from: old.lease, to: 0) } }
                let tombstone = KeyValue(key: key, value: [], version: revision, createRevision: 0)
                return AppliedMutation(
                    change: .delete(key: key, revision: revision),
                    event: WatchEvent(kind: .delete, kv: tombstone),
                    response: .written(version: revision, length: 0))
            }
        }
    }

    /// Moves a replicated key's lease attachment. A replica keeps the lease its keys were put
    /// under (as an external lease: the cluster keeps its TTL), so that whichever replica heads
    /// the shard next can end the lease's keys.
    private func attach(_ key: ByteKey, from previous: LeaseID, to next: LeaseID) {
        guard previous != 0 || next != 0 else { return }
        leases.withLock { table in
            if next != 0 { table.adoptExternal(next) }
            table.move(key, from: previous, to: next)
        }
    }

    /// Makes the store's revision counter at least `revision` (never lowers it).
    func raiseRevision(to revision: Revision) {
        var current = self.revision
        while current < revision {
            let (exchanged, original) = lastRevisionCompareExchange(expected: current, desired: revision)
            if exchanged { return }
            current = original
        }
    }

    /// The shard's keys and revision, read under its lock; `body` runs under that lock too, so
    /// whatever it registers (e.g. a follower that gets every later change) sees no change
    /// between the copy and itself.
    public func withShardSnapshot<T>(_ index: Int, _ body: (_ entries: [KeyValue], _ revision: Revision) -> T) -> T {
        shards[index].state.withLock { state in
            let entries = state.entries.map { $0.value.keyValue($0.key.string) }
            return body(entries, state.revision)
        }
    }

    /// The revision of the shard's last change.
    public func shardRevision(_ index: Int) -> Revision {
        shards[index].state.withLock { $0.revision }
    }
}

extension KeyValue {
    /// A 64-bit FNV-1a hash of the value and the create revision: what a delta copy compares,
    /// beside the version, to confirm an entry in place.
    public var fingerprint: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in value {
            h ^= UInt64(b)
            h &*= 0x100_0000_01b3
        }
        var c = createRevision
        for _ in 0..<8 {
            h ^= c & 0xff
            h &*= 0x100_0000_01b3
            c >>= 8
        }
        return h
    }

    /// The fingerprint as a delta copy's keep message carries it: 8 bytes, little-endian.
    public var fingerprintBytes: [UInt8] {
        let f = fingerprint
        return (0..<8).map { UInt8(truncatingIfNeeded: f >> (8 * UInt64($0))) }
    }

    /// The fingerprint in `bytes` (see `fingerprintBytes`); nil unless they are 8 bytes.
    public static func fingerprint(fromBytes bytes: [UInt8]) -> UInt64? {
        guard bytes.count == 8 else { return nil }
        return bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }
}
