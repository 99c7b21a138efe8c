/// The cluster's shard map: which nodes replicate each shard, in chain order (head first, tail
/// last), under an epoch that grows with every change. It lives in etcd; the elected
/// coordinator is the only writer. Nodes serve by it and clients route by it.
public struct ShardMap: Sendable, Equatable, Codable {
    /// One member of the cluster, as it registered.
    public struct Node: Sendable, Equatable, Codable {
        /// Where clients and other nodes reach its state protocol (HOST:PORT).
        public var address: String
        /// Its HTTP address (health, metrics), or empty.
        public var http: String
        /// Which life of the node this is (its etcd lease): a node that lost its lease and came
        /// back is a new member, whose data must be copied in again.
        public var incarnation: Int64
        public init(address: String, http: String = "", incarnation: Int64 = 0) {
            self.address = address
            self.http = http
            self.incarnation = incarnation
        }
    }

    /// A node being copied into a shard's chain: it gets the tail's copy of the shard and every
    /// later change, and joins the chain as its tail once it reports the copy complete.
    public struct Join: Sendable, Equatable, Codable {
        public var node: String
        /// The node that sends the copy: the chain's tail when the join began.
        public var source: String
        /// The epoch in which the join began; the node's report names it, so an old report is
        /// never taken for a new join.
        public var since: UInt64
        public init(node: String, source: String, since: UInt64) {
            self.node = node
            self.source = source
            self.since = since
        }
    }

    public var epoch: UInt64
    /// The replication factor the coordinator aims for (it is capped by the number of nodes).
    public var replicas: Int
    /// Members by node id.
    public var nodes: [String: Node]
    /// Per shard: node ids, head first.
    public var chains: [[String]]
    /// Per shard: the node being copied in, if any.
    public var joining: [Join?]

    public init(epoch: UInt64, replicas: Int, nodes: [String: Node], chains: [[String]], joining: [Join?]? = nil) {
        self.epoch = epoch
        self.replicas = replicas
        self.nodes = nodes
        self.chains = chains
        self.joining = joining ?? Array(repeating: nil, count: chains.count)
    }

    public var shardCount: Int { chains.count }

    /// The shard a key belongs to (the same hash as the store's shards).
    public func shard(of key: String) -> Int { MemoryStore.shard(of: key, shardCount: shardCount) }

    /// The shard lease `id` lives in (its record's; its head keeps the lease's clock).
    public func home(ofLease id: LeaseID) -> Int { shard(of: InternalKeys.leaseRecord(id)) }

    public func head(_ shard: Int) -> String? { chains[shard].first }
    public func tail(_ shard: Int) -> String? { chains[shard].last }

    /// The node before `node` in the shard's chain (nil for the head or a non-member).
    public func predecessor(of node: String, in shard: Int) -> String? {
        guard let i = chains[shard].firstIndex(of: node), i > 0 else { return nil }
        return chains[shard][i - 1]
    }

    /// The node after `node` in the shard's chain (nil for the tail or a non-member).
    public func successor(of node: String, in shard: Int) -> String? {
        guard let i = chains[shard].firstIndex(of: node), i + 1 < chains[shard].count else { return nil }
        return chains[shard][i + 1]
    }

    /// True when the map has `nodes` members, every chain holds min(R, nodes) replicas and no
    /// shard copy runs: the cluster has finished reacting to its last change.
    public func isSettled(nodes count: Int) -> Bool {
        nodes.count == count && joining.allSatisfy { $0 == nil } && chains.allSatisfy { $0.count == min(replicas, count) }
    }

    /// The address of a node id, if it is a member.
    public func address(of node: String) -> String? { nodes[node]?.address }
}
