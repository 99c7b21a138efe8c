/// The store every server front-end talks to. Replies arrive through `completion`: at once
/// for the in-memory store, after the write is durable for a store with a change log.
public protocol StateStore: Sendable {
    var limits: StoreLimits { get }

    func execute(_ request: StateRequest, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void)

    /// Starts a watch. Events with revision ≥ `fromRevision` that are still in history are
    /// replayed first (`compacted` if they are gone); `nil` means "from the next revision".
    /// `shard`: a prefix watch follows that shard only (how a cluster client watches a prefix:
    /// one shard at a time, each at its tail).
    func watch(
        _ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink, shard: Int?
    ) throws(WeftError) -> any WatchRegistration

    /// Ends leases whose TTL has run out; call periodically. Returns how many ended.
    @discardableResult
    func expireLeases() -> Int
}

extension StateStore {
    /// A watch of every shard.
    public func watch(
        _ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink
    ) throws(WeftError) -> any WatchRegistration {
        try watch(target, fromRevision: fromRevision, includeValues: includeValues, sink: sink, shard: nil)
    }

    /// Async convenience over `execute`.
    public func execute(_ request: StateRequest) async throws(WeftError) -> StateResponse {
        let result: Result<StateResponse, WeftError> = await withCheckedContinuation { cont in
            execute(request) { cont.resume(returning: $0) }
        }
        return try result.get()
    }
}

/// A mutation as the change log records it. Per shard, changes are appended in revision order.
public enum Change: Sendable, Equatable {
    /// The key now holds exactly this entry.
    case put(KeyValue)
    /// The key was deleted at `revision`.
    case delete(key: String, revision: Revision)
    case leaseGrant(id: LeaseID, ttlSeconds: Int64)
    case leaseRevoke(id: LeaseID)
}

/// Makes changes durable (WeftStorage implements it on LMDB). `append` is called while the
/// shard's lock is held, so per shard the log sees revision order; it must not block for long
/// (it may block briefly for backpressure). `done` runs once the change is durable, or with
/// the error that prevented it; `done`s run in append order.
public protocol ChangeLog: Sendable {
    func append(_ change: Change, revision: Revision, done: @escaping @Sendable (WeftError?) -> Void)
    /// The same, for a put whose client the chain's tail may tell of its commit (a cluster's
    /// replication log passes `replyAt` down the chain; other logs ignore it).
    func append(_ change: Change, revision: Revision, replyAt: ReplyAt?, done: @escaping @Sendable (WeftError?) -> Void)
    /// The most changes that may be accepted but not yet durable at once. On restart the store
    /// starts revisions this far above the last durable one, so a revision a reader may have
    /// seen before a crash is never handed out again.
    var pendingChangesMax: Int { get }
    /// True when `done` means "on disk" (status shows the store as durable).
    var isDurable: Bool { get }
}

extension ChangeLog {
    public var isDurable: Bool { true }
    public func append(_ change: Change, revision: Revision, replyAt: ReplyAt?, done: @escaping @Sendable (WeftError?) -> Void) {
        append(change, revision: revision, done: done)
    }
}

/// What a durable store hands the in-memory store at start.
public struct RecoveredState: Sendable {
    public var entries: [KeyValue]
    public var leases: [(id: LeaseID, ttlSeconds: Int64)]
    /// The highest revision found durable.
    public var revision: Revision
    public init(entries: [KeyValue], leases: [(id: LeaseID, ttlSeconds: Int64)], revision: Revision) {
        self.entries = entries
        self.leases = leases
        self.revision = revision
    }
}
