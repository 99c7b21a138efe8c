import WeftCore

/// The coordinator's logic as a pure state machine: it learns the live members, the copy
/// reports of joining nodes and the map as published, and answers with the map to publish
/// next. The elected node's shell (`CoordinatorLoop`) feeds it from etcd and performs its
/// directives; tests drive it directly through any interleaving.
///
/// What it does to the map, each step bumping the epoch:
/// - a node whose etcd lease ended leaves every chain (head → the next node is head; tail → the
///   predecessor is tail; middle → the predecessor resends what the successor lacks);
/// - a shard with fewer than R replicas gets a node copied in from its tail, which joins the
///   chain as tail once it reports the copy complete;
/// - a node with much less load than another takes a shard over the same way (rebalancing),
///   after which the most loaded member other than the tail leaves that chain.
///
/// Safety rules: a live node leaves a chain only once every live node serves by the current
/// map (so no node still takes itself for a replica it no longer is), and never as the
/// chain's tail; a tail changes only by a new node joining behind it, or by the tail dying
/// (its lease has ended, and a node stops serving before its lease can end).
public struct Coordinator: Sendable {
    public enum Event: Sendable, Equatable {
        /// The live members (their etcd leases are valid).
        case members([String: ShardMap.Node])
        /// `node` reports its copy of `shard` complete, for the join that began in `since`.
        case copied(node: String, shard: Int, since: UInt64)
        /// The map as it now is in etcd (published by us or read back).
        case published(ShardMap)
        /// `node` serves by the map of `epoch` (or a later one).
        case acknowledged(node: String, epoch: UInt64)
    }

    public enum Directive: Sendable, Equatable {
        /// Write this map (its epoch is one above the current one).
        case publish(ShardMap)
    }

    public let shardCount: Int
    public let replicas: Int
    public private(set) var map: ShardMap?
    public private(set) var live: [String: ShardMap.Node] = [:]
    private var copied: Set<CopyReport> = []
    private var acknowledged: [String: UInt64] = [:]

    struct CopyReport: Hashable, Sendable {
        var node: String
        var shard: Int
        var since: UInt64
    }

    public init(shardCount: Int, replicas: Int, map: ShardMap? = nil) {
        precondition(shardCount >= 1 && replicas >= 1, "shardCount and replicas must be at least 1")
        self.shardCount = shardCount
        self.replicas = replicas
        self.map = map
    }

    public mutating func handle(_ event: Event) -> [Directive] {
        switch event {
        case .members(let members): live = members
        case .copied(let node, let shard, let since): copied.insert(CopyReport(node: node, shard: shard, since: since))
        case .acknowledged(let node, let epoch): acknowledged[node] = max(acknowledged[node] ?? 0, epoch)
        case .published(let published):
            map = published
            // Reports for joins that are over are of no further use.
            copied = copied.filter { r in r.shard < published.shardCount && published.joining[r.shard]?.node == r.node }
        }
        guard let next = plan() else { return [] }
        return [.publish(next)]
    }

    /// The next map, or nil when nothing needs to change.
    func plan() -> ShardMap? {
        guard !live.isEmpty else { return nil }
        guard let current = map else { return initialMap() }
        var next = current
        let epoch = current.epoch + 1
        next.epoch = epoch
        next.replicas = replicas
        next.nodes = live
        let target = min(replicas, live.count)
        // 1. Dead nodes leave every chain; joins from or to them restart or end.
        // A member that came back with a new incarnation lost what it held: it is a new node.
        let reborn = Set(live.compactMap { id, node in
            current.nodes[id].map { $0.incarnation != node.incarnation } == true ? id : nil
        })
        for s in 0..<next.shardCount {
            next.chains[s] = next.chains[s].filter { live[$0] != nil && !reborn.contains($0) }
            if let join = next.joining[s] {
                if live[join.node] == nil || reborn.contains(join.node) || next.chains[s].contains(join.node) {
                    next.joining[s] = nil
                } else if join.source != next.chains[s].last {
                    // The copy's source is no longer the tail: the new tail starts over.
                    next.joining[s] = next.chains[s].last.map { ShardMap.Join(node: join.node, source: $0, since: epoch) }
                }
            }
        }
        // 2. Completed copies join their chains as tails.
        for s in 0..<next.shardCount {
            guard let join = next.joining[s],
                  copied.contains(CopyReport(node: join.node, shard: s, since: join.since)),
                  join.source == next.chains[s].last
            else { continue }
            next.chains[s].append(join.node)
            next.joining[s] = nil
        }
        // 2b. A chain above R sheds its most loaded member other than the tail (the end of a
        //     rebalancing move), once every live node serves by the current map.
        if live.keys.allSatisfy({ (acknowledged[$0] ?? 0) >= current.epoch }) {
            for s in 0..<next.shardCount where next.chains[s].count > target && current.chains[s].count > target {
                let load = Self.load(next)
                if let drop = next.chains[s].dropLast().max(by: { (load[$0] ?? 0, $0) < (load[$1] ?? 0, $1) }) {
                    next.chains[s].removeAll { $0 == drop }
                }
            }
        }
        // 3. An empty chain restarts on one node: a former member that came back (with --data
        //    it recovered the shard from disk), else any node (the shard's data is gone). The
        //    head first: every member acknowledges a write only once it is on its disk, but the
        //    tail may have joined just before, with changes acknowledged by the tail before it
        //    not yet on its disk; what the head holds beyond the committed writes was never
        //    acknowledged, so it may take effect. Short chains get a node copied in.
        for s in 0..<next.shardCount {
            if next.chains[s].isEmpty {
                next.joining[s] = nil
                if let back = current.chains[s].first(where: { live[$0] != nil }) {
                    next.chains[s] = [back]
                } else if let n = Self.leastLoaded(next, excluding: []) {
                    next.chains[s] = [n]
                }
            }
            if next.joining[s] == nil, next.chains[s].count < target, let tail = next.chains[s].last,
               let n = Self.leastLoaded(next, excluding: Set(next.chains[s])) {
                next.joining[s] = ShardMap.Join(node: n, source: tail, since: epoch)
            }
        }
        // 4. Rebalance one shard at a time, only while no other copy runs.
        if next.joining.allSatisfy({ $0 == nil }) {
            let load = Self.load(next)
            if let (most, least) = Self.imbalance(load, nodes: Array(live.keys)),
               let s = (0..<next.shardCount).first(where: { next.chains[$0].contains(most) && !next.chains[$0].contains(least) }),
               let tail = next.chains[s].last {
                next.joining[s] = ShardMap.Join(node: least, source: tail, since: epoch)
            }
        }
        var unchanged = next
        unchanged.epoch = current.epoch
        return unchanged == current ? nil : next
    }

    private func initialMap() -> ShardMap {
        let ids = live.keys.sorted()
        let r = min(replicas, ids.count)
        let chains = (0..<shardCount).map { s in (0..<r).map { ids[(s + $0) % ids.count] } }
        return ShardMap(epoch: 1, replicas: replicas, nodes: live, chains: chains)
    }

    /// Chain memberships plus joins, per node.
    static func load(_ map: ShardMap) -> [String: Int] {
        var load: [String: Int] = [:]
        for id in map.nodes.keys { load[id] = 0 }
        for chain in map.chains { for n in chain { load[n, default: 0] += 1 } }
        for join in map.joining { if let j = join { load[j.node, default: 0] += 1 } }
        return load
    }

    static func leastLoaded(_ map: ShardMap, excluding: Set<String>) -> String? {
        let load = self.load(map)
        return map.nodes.keys.filter { !excluding.contains($0) }.min { (load[$0] ?? 0, $0) < (load[$1] ?? 0, $1) }
    }

    /// The most and least loaded nodes when they differ by more than one shard.
    static func imbalance(_ load: [String: Int], nodes: [String]) -> (String, String)? {
        guard nodes.count >= 2 else { return nil }
        let sorted = nodes.sorted { (load[$0] ?? 0, $0) < (load[$1] ?? 0, $1) }
        let least = sorted.first!, most = sorted.last!
        return (load[most] ?? 0) - (load[least] ?? 0) > 1 ? (most, least) : nil
    }
}
