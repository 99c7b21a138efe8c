/// What a cluster node needs of its store beyond the state model: the system's own records
/// (see `InternalKeys`), leases kept by the cluster rather than by this store, and ending the
/// watches of a shard the node no longer replicates.
extension MemoryStore {
    // MARK: records

    /// Puts a record (an internal key, which `execute` refuses); `ifVersion` as for `put`.
    public func putRecord(_ key: String, value: [UInt8], ifVersion: Revision?, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        precondition(InternalKeys.isInternal(key), "not an internal key")
        put(key, value: value, ifVersion: ifVersion, lease: 0, validated: true, completion: completion)
    }

    /// Deletes a record; `notFound` if it is absent.
    public func deleteRecord(_ key: String, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        precondition(InternalKeys.isInternal(key), "not an internal key")
        _ = deleteAttached(ByteKey(key), lease: 0, completion: completion)
    }

    /// A record, nil if absent.
    public func record(_ key: String) -> KeyValue? {
        let byteKey = ByteKey(key)
        return shard(for: key).state.withLock { $0.entries[byteKey]?.keyValue(key) }
    }

    /// The records under `prefix` (an internal prefix) in shard `index`.
    public func records(prefix: String, shard index: Int) -> [KeyValue] {
        guard index >= 0, index < shardCount else { return [] }
        return shards[index].state.withLock { state in
            state.entries.compactMap { key, entry in key.hasPrefix(prefix) ? entry.keyValue(key.string) : nil }
        }
    }

    // MARK: leases kept by the cluster

    /// Lets keys be put under lease `id`, which the cluster keeps: it lives here until `endLease`.
    public func adoptLease(_ id: LeaseID) {
        guard id != 0 else { return }
        leases.withLock { $0.adoptExternal(id) }
    }

    /// Makes every lease in the table external: for a cluster node whose store recovered keys
    /// from disk (their leases are the cluster's, kept by their home shards' heads).
    public func adoptAllLeases() {
        leases.withLock { table in for id in table.leases.keys { table.adoptExternal(id) } }
    }

    /// The leases that keys of the shards `admit` takes are attached to.
    public func attachedLeases(inShards admit: (Int) -> Bool) -> [LeaseID] {
        let attached = leases.withLock { table in table.leases.compactMap { id, lease in lease.keys.isEmpty ? nil : (id, lease.keys) } }
        return attached.compactMap { id, keys in keys.contains { admit(Self.shard(of: $0.string, shardCount: shardCount)) } ? id : nil }
    }

    /// Drops adopted leases no key is attached to.
    public func pruneAdoptedLeases() {
        leases.withLock { $0.pruneExternal() }
    }

    /// Ends lease `id` for the keys of the shards `admit` takes: each is deleted (a normal
    /// mutation: logged, so replicated down its chain, and shown to watchers). Keys of other
    /// shards stay attached (their own shards' heads delete them). `completion` gets how many
    /// keys were deleted, once every delete has completed.
    public func endLease(_ id: LeaseID, inShards admit: (Int) -> Bool, completion: @escaping @Sendable (Int) -> Void) {
        // In byte order (sorted outside the lock), as a single node deletes them (see
        // `endLease(_:keys:completion:)`).
        let admitted: [ByteKey] = leases.withLock { table in
            guard let lease = table.leases[id] else { return [] }
            return lease.keys.filter { admit(Self.shard(of: $0.string, shardCount: shardCount)) }
        }
        let keys = admitted.sorted { $0.precedes($1) }
        guard !keys.isEmpty else {
            completion(0)
            return
        }
        let tally = Tally(expecting: keys.count, done: completion)
        for key in keys {
            _ = deleteAttached(key, lease: id) { result in
                if case .success = result { tally.add(1) } else { tally.add(0) }
            }
        }
    }

    // MARK: watches

    /// Ends every watch registered in shard `index` with `error` (its node no longer
    /// replicates the shard, so they would see no more events).
    public func endWatches(shard index: Int, error: WeftError) {
        guard index >= 0, index < shardCount else { return }
        for handle in shards[index].hub.drain() { handle.end(error) }
    }
}
