import Synchronization

/// A stored value and its metadata; the key is the dictionary key.
struct StoredEntry: Sendable {
    var value: [UInt8]
    var version: Revision
    var createRevision: Revision
    var lease: LeaseID

    func keyValue(_ key: String, includeValue: Bool = true) -> KeyValue {
        KeyValue(key: key, value: includeValue ? value : [], version: version, createRevision: createRevision, lease: lease)
    }
}

/// The keys of one shard, guarded by the shard's lock.
struct ShardState: Sendable {
    var entries: [ByteKey: StoredEntry] = [:]
    /// Sum of the value sizes, for `status`.
    var valueBytes = 0
    /// The revision of the shard's last change (its high-water mark): what a replica compares a
    /// replicated change's `previous` with.
    var revision: Revision = 0

    mutating func remove(_ key: ByteKey) -> StoredEntry? {
        guard let old = entries.removeValue(forKey: key) else { return nil }
        valueBytes -= old.value.count
        return old
    }
}

/// One of the store's shards: its keys under their own lock, and its watch hub.
/// Lock order: shard lock → lease table lock, and shard lock → hub lock.
final class Shard: Sendable {
    let state = Mutex(ShardState())
    let hub: WatchHub

    init(hub: WatchHub) {
        self.hub = hub
    }
}
