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
    ///
    /// `shard` restricts a prefix watch to that shard. "From now" is from the next revision of
    /// the watched shard when there is one (a key's, or `shard`): a cluster node's revision
    /// counter runs ahead of shards whose head is another node, whose next changes may carry
    /// lower revisions than this node's last.
    public func watch(
        _ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink, shard only: Int?
    ) throws(WeftError) -> any WatchRegistration {
        let hubs: [WatchHub]
        var single: Int?
        switch target {
        case .key(let key):
            try StateKey.validate(key, limits: limits)
            single = Self.shard(of: key, shardCount: shardCount)
            hubs = [shards[single!].hub]
        case .prefix(let prefix):
            _ = try StateKey.validatePrefix(bytes: prefix.utf8, limits: limits)
            if let only {
                guard only >= 0, only < shardCount else { throw WeftError(.invalidArgument, "no shard \(only)") }
                single = only
                hubs = [shards[only].hub]
            } else {
                hubs = shards.map(\.hub)
            }
        }
        // "From now" can meet a history evicted between reading the revision and registering
        // (only with a tiny history under load): then it retries from a newer revision.
        var attempts = 0
        while true {
            attempts += 1
            let now = single.map { shardRevision($0) } ?? revision
            let from = max(fromRevision ?? (now + 1), 1)
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
