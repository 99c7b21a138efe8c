/// Bounds and timings of a gateway (TIGER_STYLE: a limit on everything).
public struct GatewayConfiguration: Sendable {
    /// Largest function executable a deploy accepts, in bytes (nil: the store's `valueBytesMax`,
    /// since code is stored as state).
    public var codeBytesMax: Int?
    /// Largest invocation input, in bytes.
    public var inputBytesMax: Int
    /// Most watch streams open at once; more get `429 overloaded`.
    public var watchStreamsMax: Int
    /// Events queued for one watch stream before it is ended with `event: compacted`.
    public var watchBacklogMax: Int
    /// A comment line is sent on an idle watch stream this often, so that a client that went
    /// away is noticed (the write fails) and its watch is released.
    public var watchHeartbeatMs: Int
    /// How long `stop()` waits for requests in flight before cancelling them.
    public var shutdownGraceMs: Int
    /// Idle keep-alive connections are closed after this long.
    public var idleTimeoutMs: Int
    /// Most open connections; beyond it the server stops accepting until one closes.
    public var connectionsMax: Int
    /// Whether one revision orders every change (a single node). On a cluster each shard
    /// counts its own revisions, so one number cannot say where a prefix watch left off:
    /// `/v1/watch` then refuses `from` and `Last-Event-ID` instead of resuming every shard at
    /// a revision that would skip the changes of shards that count lower.
    public var revisionsAreGlobal: Bool

    public init(
        codeBytesMax: Int? = nil,
        inputBytesMax: Int = 16 << 20,
        watchStreamsMax: Int = 1024,
        watchBacklogMax: Int = 1024,
        watchHeartbeatMs: Int = 15_000,
        shutdownGraceMs: Int = 5_000,
        idleTimeoutMs: Int = 60_000,
        connectionsMax: Int = 4096,
        revisionsAreGlobal: Bool = true
    ) {
        precondition(inputBytesMax >= 0 && watchStreamsMax >= 1 && watchBacklogMax >= 1 && watchHeartbeatMs >= 1 && connectionsMax >= 1, "invalid GatewayConfiguration")
        self.codeBytesMax = codeBytesMax
        self.inputBytesMax = inputBytesMax
        self.watchStreamsMax = watchStreamsMax
        self.watchBacklogMax = watchBacklogMax
        self.watchHeartbeatMs = watchHeartbeatMs
        self.shutdownGraceMs = shutdownGraceMs
        self.idleTimeoutMs = idleTimeoutMs
        self.connectionsMax = connectionsMax
        self.revisionsAreGlobal = revisionsAreGlobal
    }
}
