extension MemoryStore {
    /// Reads a key and runs `body` with it while the key's shard is still locked, so that what
    /// `body` records (e.g. a cache lease) is ordered with every write of the key.
    public func read<T>(_ key: String, underLock body: (KeyValue?) -> T) throws(WeftError) -> T {
        if !InternalKeys.isInternal(key) { try StateKey.validate(key, limits: limits) }
        let byteKey = ByteKey(key)
        return shard(for: key).state.withLock { state in body(state.entries[byteKey].map { $0.keyValue(key) }) }
    }

    /// `get`: the value (or a byte range of it), or `notModified` if the key has not changed
    /// since `ifChangedSince`.
    func get(_ key: String, range: ByteRange?, ifChangedSince: Revision?) throws(WeftError) -> StateResponse {
        try StateKey.validate(key, limits: limits)
        let byteKey = ByteKey(key)
        guard let entry = shard(for: key).state.withLock({ $0.entries[byteKey] }) else { throw .notFound(key) }
        if let since = ifChangedSince, entry.version <= since {
            return .notModified(version: entry.version)
        }
        var kv = entry.keyValue(key)
        if let range {
            let length = UInt64(entry.value.count)
            guard range.offset <= length else {
                throw WeftError(.outOfRange, "offset \(range.offset) is past the end of '\(key)' (\(length) bytes)")
            }
            let end = range.offset + min(range.length, length - range.offset)
            if range.offset != 0 || end != length {
                kv.value = Array(entry.value[Int(range.offset)..<Int(end)])
            }
        }
        return .value(kv)
    }

    /// `list`: keys with `prefix` strictly after `after`, in UTF-8 byte order, merged across
    /// shards. Each shard is read under its own lock, so the result is not one snapshot: the
    /// returned revision is read *before* the scan, so every change at or below it is reflected
    /// and later ones may be (a watch from revision + 1 then fills in the rest idempotently).
    ///
    /// `shards`: only keys of the shards it admits (cluster mode: the shards a node serves reads of).
    public func list(
        prefix: String, after: String?, limit: Int, keysOnly: Bool, shards admit: ((Int) -> Bool)? = nil
    ) throws(WeftError) -> StateResponse {
        _ = try StateKey.validatePrefix(bytes: prefix.utf8, limits: limits)
        let startRevision = revision
        let limit = min(max(limit, 1), limits.listLimitMax)
        let after = after.map(ByteKey.init)
        var found: [(key: ByteKey, entry: StoredEntry)] = []
        for (index, shard) in shards.enumerated() {
            if let admit, !admit(index) { continue }
            var matches = shard.state.withLock { state in
                var matches: [(key: ByteKey, entry: StoredEntry)] = []
                for (key, entry) in state.entries where key.hasPrefix(prefix) && !key.isInternal {
                    if let after, !after.precedes(key) { continue }
                    matches.append((key, entry))
                }
                return matches
            }
            // Keep at most `limit + 1` per shard: enough to fill the page and to know if there is more.
            if matches.count > limit {
                matches.sort { $0.key.precedes($1.key) }
                matches.removeSubrange((limit + 1)...)
            }
            found += matches
        }
        found.sort { $0.key.precedes($1.key) }
        let more = found.count > limit
        let entries = found.prefix(limit).map { $0.entry.keyValue($0.key.string, includeValue: !keysOnly) }
        return .list(entries: entries, more: more, revision: startRevision)
    }
}
