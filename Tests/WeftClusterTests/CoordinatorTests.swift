import Testing
import WeftCore
@testable import WeftCluster

/// The coordinator's state machine, driven directly: bring-up, failures, joins, rebalancing.
@Suite struct CoordinatorTests {
    static func nodes(_ ids: [String], incarnation: Int64 = 1) -> [String: ShardMap.Node] {
        Dictionary(uniqueKeysWithValues: ids.map { ($0, ShardMap.Node(address: "\($0):7400", incarnation: incarnation)) })
    }

    /// Feeds directives back as published maps, as the shell does; returns the last map.
    @discardableResult
    static func settle(_ c: inout Coordinator, _ directives: [Coordinator.Directive]) -> ShardMap? {
        var pending = directives
        var last: ShardMap?
        var steps = 0
        while let d = pending.first, steps < 1000 {
            pending.removeFirst()
            steps += 1
            guard case .publish(let map) = d else { continue }
            #expect(map.epoch == (c.map?.epoch ?? 0) + 1, "each publish bumps the epoch by one")
            last = map
            pending += c.handle(.published(map))
        }
        return last ?? c.map
    }

    /// Reports every running copy complete and every node caught up, until nothing changes.
    static func completeCopies(_ c: inout Coordinator) {
        for _ in 0..<50 {
            guard let map = c.map else { return }
            // Like the shell: feed every event, publish what the last one asks for.
            var directives: [Coordinator.Directive] = []
            for id in map.nodes.keys { directives = c.handle(.acknowledged(node: id, epoch: map.epoch)) }
            for (s, join) in map.joining.enumerated() {
                if let join { directives = c.handle(.copied(node: join.node, shard: s, since: join.since)) }
            }
            if directives.isEmpty { return }
            settle(&c, directives)
        }
    }

    static func check(_ map: ShardMap, replicas: Int) {
        for (s, chain) in map.chains.enumerated() {
            #expect(chain.count == min(replicas, map.nodes.count), "shard \(s) has chain \(chain)")
            #expect(Set(chain).count == chain.count, "shard \(s) repeats a node: \(chain)")
            #expect(chain.allSatisfy { map.nodes[$0] != nil }, "shard \(s) names a non-member")
        }
    }

    @Test func bringUpSpreadsHeadsAndTails() {
        var c = Coordinator(shardCount: 12, replicas: 3)
        let map = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "c"]))))!
        Self.check(map, replicas: 3)
        let heads = Dictionary(grouping: map.chains.compactMap(\.first), by: { $0 }).mapValues(\.count)
        #expect(heads.values.allSatisfy { $0 == 4 }, "heads \(heads)")
        #expect(c.handle(.members(Self.nodes(["a", "b", "c"]))).isEmpty, "no change, no new map")
    }

    @Test func deadHeadMiddleAndTailLeaveTheirChainsInOrder() {
        var c = Coordinator(shardCount: 3, replicas: 3)
        let before = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "c"]))))!
        let after = Self.settle(&c, c.handle(.members(Self.nodes(["a", "c"]))))!
        for s in 0..<3 {
            #expect(after.chains[s] == before.chains[s].filter { $0 != "b" }, "order kept, b gone in shard \(s)")
            #expect(after.joining[s] == nil, "no spare node to copy to")
        }
    }

    @Test func aNewNodeIsCopiedInAndJoinsAtTheTail() {
        var c = Coordinator(shardCount: 4, replicas: 3)
        Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "c"]))))
        let shrunk = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b"]))))!
        #expect(shrunk.chains.allSatisfy { $0.count == 2 })
        let joining = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "d"]))))!
        for s in 0..<4 {
            #expect(joining.joining[s]?.node == "d", "d is copied into shard \(s)")
            #expect(joining.joining[s]?.source == joining.chains[s].last, "from the tail")
            #expect(!joining.chains[s].contains("d"), "not in the chain before its copy completes")
        }
        // A report for another join (wrong epoch) changes nothing.
        #expect(c.handle(.copied(node: "d", shard: 0, since: 1)).isEmpty)
        let join = joining.joining[0]!
        let joined = Self.settle(&c, c.handle(.copied(node: "d", shard: 0, since: join.since)))!
        #expect(joined.chains[0].last == "d" && joined.joining[0] == nil)
        Self.completeCopies(&c)
        Self.check(c.map!, replicas: 3)
    }

    @Test func aCopyRestartsWhenItsSourceDies() {
        var c = Coordinator(shardCount: 1, replicas: 3)
        Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "c"]))))
        Self.settle(&c, c.handle(.members(Self.nodes(["a", "b"]))))
        let m1 = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "d"]))))!
        let source = m1.joining[0]!.source
        let survivors = ["a", "b", "d"].filter { $0 != source }
        let m2 = Self.settle(&c, c.handle(.members(Self.nodes(survivors))))!
        #expect(m2.joining[0]?.node == "d")
        #expect(m2.joining[0]?.source == m2.chains[0].last && m2.joining[0]?.source != source)
        #expect(m2.joining[0]!.since > m1.joining[0]!.since, "a new join: an old report does not count")
        #expect(c.handle(.copied(node: "d", shard: 0, since: m1.joining[0]!.since)).isEmpty)
    }

    @Test func aRebornNodeIsANewMember() {
        var c = Coordinator(shardCount: 2, replicas: 2)
        Self.settle(&c, c.handle(.members(Self.nodes(["a", "b"]))))
        var members = Self.nodes(["a", "b"])
        members["b"]!.incarnation = 2
        let m = Self.settle(&c, c.handle(.members(members)))!
        for s in 0..<2 {
            #expect(m.chains[s] == ["a"], "b lost its data: out of every chain")
            #expect(m.joining[s]?.node == "b", "and copied in again")
        }
    }

    @Test func rebalancingMovesShardsToANewNodeWithoutDroppingATail() {
        var c = Coordinator(shardCount: 8, replicas: 1)
        Self.settle(&c, c.handle(.members(Self.nodes(["a"]))))
        Self.settle(&c, c.handle(.members(Self.nodes(["a", "b"]))))
        var tails = c.map!.chains.map(\.last)
        for _ in 0..<200 {
            guard let map = c.map else { break }
            var directives: [Coordinator.Directive] = []
            for id in map.nodes.keys { directives = c.handle(.acknowledged(node: id, epoch: map.epoch)) }
            for (s, join) in map.joining.enumerated() {
                if let join { directives = c.handle(.copied(node: join.node, shard: s, since: join.since)) }
            }
            guard case .publish(let next)? = directives.first else { break }
            // Invariant: a tail changes only by a node joining behind it.
            for s in 0..<next.shardCount where next.chains[s].last != tails[s] {
                #expect(next.chains[s].dropLast().contains(tails[s]!), "shard \(s): tail \(tails[s]!) dropped while alive")
            }
            tails = next.chains.map(\.last)
            _ = c.handle(.published(next))
        }
        let load = Dictionary(grouping: c.map!.chains.flatMap { $0 }, by: { $0 }).mapValues(\.count)
        #expect(load["a"] == 4 && load["b"] == 4, "balanced: \(load)")
        Self.check(c.map!, replicas: 1)
    }

    @Test func aWholeClusterRestartStartsEachShardAgainOnItsFormerHead() {
        var c = Coordinator(shardCount: 4, replicas: 3)
        let before = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "c"]))))!
        // Every node comes back as a new incarnation (killed and restarted with --data).
        let after = Self.settle(&c, c.handle(.members(Self.nodes(["a", "b", "c"], incarnation: 2))))!
        for s in 0..<4 {
            #expect(after.chains[s].first == before.chains[s].first, "shard \(s): \(before.chains[s]) → \(after.chains[s])")
        }
    }

    @Test func losingEveryReplicaRestartsTheShardOnASurvivor() {
        var c = Coordinator(shardCount: 4, replicas: 1)
        Self.settle(&c, c.handle(.members(Self.nodes(["a", "b"]))))
        let m = Self.settle(&c, c.handle(.members(Self.nodes(["b"]))))!
        #expect(m.chains.allSatisfy { $0 == ["b"] })
    }
}
