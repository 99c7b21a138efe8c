/// Bounds on everything the store holds or hands out (TIGER_STYLE: put a limit on everything).
public struct StoreLimits: Sendable, Equatable {
    /// Largest value, in bytes. Above it a write fails with `valueTooLarge`.
    public var valueBytesMax: Int
    /// Longest key, in UTF-8 bytes.
    public var keyBytesMax: Int
    /// Most keys one `list` returns.
    public var listLimitMax: Int
    /// Watch events kept per shard for watches that start in the past.
    public var watchHistoryPerShard: Int
    /// Value bytes kept per shard in watch history (older events are compacted): with 64
    /// shards the default holds at most 64 MiB of history.
    public var watchHistoryValueBytesPerShard: Int
    /// Events queued for one watcher before it is cut off with `compacted`.
    public var watchBacklogMax: Int
    /// Longest lease TTL, in seconds.
    public var leaseTTLSecondsMax: Int64
    /// Most live leases.
    public var leasesMax: Int

    public init(
        valueBytesMax: Int = 64 << 20,
        keyBytesMax: Int = 1024,
        listLimitMax: Int = 10_000,
        watchHistoryPerShard: Int = 4096,
        watchHistoryValueBytesPerShard: Int = 1 << 20,
        watchBacklogMax: Int = 10_000,
        leaseTTLSecondsMax: Int64 = 86_400 * 30,
        leasesMax: Int = 1_000_000
    ) {
        self.valueBytesMax = valueBytesMax
        self.keyBytesMax = keyBytesMax
        self.listLimitMax = listLimitMax
        self.watchHistoryPerShard = watchHistoryPerShard
        self.watchHistoryValueBytesPerShard = watchHistoryValueBytesPerShard
        self.watchBacklogMax = watchBacklogMax
        self.leaseTTLSecondsMax = leaseTTLSecondsMax
        self.leasesMax = leasesMax
    }

    public static let `default` = StoreLimits()
}
