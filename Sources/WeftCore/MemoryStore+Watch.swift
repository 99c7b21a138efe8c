extension MemoryStore {
    /// Starts a watch on a key (registered in its shard only) or a prefix (in every shard).
    ///
    /// From `fromRevision`, matching events still in the shards' histories are replayed before
    /// live ones; if a shard's history no longer reaches back that far, or the revision is from
    /// before the store started (recovery), this throws `compacted`. `nil` starts at the next
    /// revision. A sink that refuses an event (`deliver` returns false) is removed and gets
    /// `terminate(compacted)`.
    ///
    /// `deliver` runs under the shard's lock: it must not call into the store. To stop from
    /// inside `deliver`, return false; `cancel()` works there too but only takes effect
    /// fully once the shard next publishes.
    public func watch(
        _ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink
    ) throws(WeftError) -> any WatchRegistration {
        let hubs: [WatchHub]
        switch target {
        case .key(let key):
            try StateKey.validate(key, limits: limits)
            hubs = [shard(for: key).hub]
        case .prefix(let prefix):
            _ = try StateKey.validatePrefix(bytes: prefix.utf8, limits: limits)
            hubs = shards.map(\.hub)
        }
        // "From now" can meet a history evicted between reading the revision and registering
        // (only with a tiny history under load): then it retries from a newer revision.
        var attempts = 0
        while true {
            attempts += 1
            let from = max(fromRevision ?? (revision + 1), 1)
            do {
                return try register(target, from: from, includeValues: includeValues, sink: sink, hubs: hubs)
            } catch where fromRevision == nil && error.code == .compacted && attempts < 1000 {
                continue
            }
        }
    }

    private func register(
        _ target: WatchTarget, from: Revision, includeValues: Bool, sink: any WatchSink, hubs: [WatchHub]
    ) throws(WeftError) -> WatchHandle {
        // Check every hub first, so that a compacted watch usually fails before anything is
        // delivered. A hub can still compact between this check and its registration; then
        // the sink may have seen some replayed events before the error.
        if hubs.contains(where: { $0.isCompacted(from: from) }) {
            throw WeftError(.compacted, "revision \(from) is no longer in the watch history")
        }
        let handle = WatchHandle(
            target: target, includeValues: includeValues, sink: sink, startRevision: from, hubs: hubs, count: watcherCount)
        for hub in hubs {
            do {
                guard try hub.register(handle) else {
                    handle.end(WeftError(.compacted, "watcher fell behind: its sink refused a replayed event"))
                    return handle
                }
            } catch {
                handle.cancel()
                throw error
            }
        }
        return handle
    }
}
