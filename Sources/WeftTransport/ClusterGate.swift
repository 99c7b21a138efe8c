import WeftCore
import WeftWire

/// How a node in cluster mode wants a client's state request handled.
public enum ClusterDecision: Sendable {
    /// Run it on the local store as a single node would.
    case serve
    /// Answer with this (an error such as `wrongEpoch`, or a result the gate computed, e.g. a
    /// list over the shards this node serves).
    case answer(Result<StateResponse, WeftError>)
    /// The gate serves it itself, maybe later (e.g. a read that waits while a write of the key
    /// is held at the tail because caches may still hold the old value).
    case later(run: @Sendable (_ reply: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) -> Void)
}

/// The cluster-mode hooks of a state server (WeftCluster implements them): which requests this
/// node may serve in the request's epoch (writes at a chain's head, reads at its tail), the
/// replication stream from predecessors, and the shard map for clients.
public protocol ClusterGate: Sendable {
    /// Whether puts that ask for their tail's answer (`replyAt`) get it now: a tail's answer
    /// saves the client a hop but costs the chain a second answer per put, worth it only while
    /// the machine has CPU to spare.
    var admitsTailReplies: Bool { get }
    /// Whether this node passes a change's `replyAt` down its chain (a durable node does not:
    /// see `Replication.append`), so that its acknowledgement of the change can wait.
    var relaysTailReplies: Bool { get }
    /// `replyAt`: a put's client, whom the chain's tail tells once the put is committed.
    func decide(_ request: StateRequest, epoch: UInt64, replyAt: ReplyAt?) -> ClusterDecision
    /// nil: the watch may run here. `shard`: a prefix watch of that shard only.
    func admitWatch(_ target: WatchTarget, epoch: UInt64, shard: Int?) -> WeftError?
    /// Applies one replication message from a predecessor; completes with the shard's revision
    /// once the change has reached the tail.
    func replicate(_ message: ReplicationMessage, epoch: UInt64, completion: @escaping @Sendable (Result<Revision, WeftError>) -> Void)
    /// A read for a coherent cache: the value and how long it may be cached (ms).
    func cacheGet(
        _ key: String, epoch: UInt64, holder: any CacheHolder,
        completion: @escaping @Sendable (Result<(KeyValue, UInt32), WeftError>) -> Void)
    /// A cache acknowledged invalidation `seq`.
    func cacheAcked(seq: UInt64)
    /// A connection names client `client` (see `ReplyAt`): this node, as a chain's tail, tells
    /// `feed` when that client's puts are committed. Until `closeCommitFeed` with the same feed.
    func openCommitFeed(client: UInt64, feed: any CommitFeed)
    func closeCommitFeed(client: UInt64, feed: any CommitFeed)
    /// The shard map this node serves by: its epoch and JSON.
    func shardMap() -> (epoch: UInt64, json: [UInt8])
    /// The node's view of the cluster for `status`, as JSON.
    func statusJSON() -> String
}

/// A client's connection to this node, told when the client's puts are committed here as the
/// chain's tail (`ClientResponse.committed`).
public protocol CommitFeed: AnyObject, Sendable {
    func committed(seq: UInt64, version: Revision, length: UInt64)
}

/// A connection that caches values read from this node: a write of such a key tells it to drop
/// the key (`cache_invalidate`), and waits for its `cache_ack` or for the lease to end.
public protocol CacheHolder: AnyObject, Sendable {
    func invalidate(key: String, seq: UInt64)
}
