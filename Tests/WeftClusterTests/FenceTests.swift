import Logging
import Synchronization
import Testing
import WeftCore
import WeftTransport
import WeftWire
@testable import WeftCluster

/// A node that joins a chain as its tail serves reads only once its predecessor has fenced it
/// in, and the fence is accepted only if the node holds every change the predecessor has. The
/// case behind stop 10's stale reads: a copy's stream broke after the joining node had reported
/// it complete, the source acknowledged writes it no longer streamed, and the coordinator
/// promoted the node on its report; or a copy started over and was still arriving at promotion.
/// Such a node must not serve, and gives up its membership to be copied in again.
@Suite struct FenceTests {
    final class BrokenLog: Sendable {
        let calls = Mutex<[(shard: Int, incarnation: Int64)]>([])
    }

    /// Node "F" (incarnation 7) joining shard 0 of a one-shard cluster from "S".
    final class Joiner: Sendable {
        let gate: NodeGate
        /// The `broken` calls: shard and incarnation.
        let log = BrokenLog()
        var broken: [(shard: Int, incarnation: Int64)] { log.calls.withLock { $0 } }

        init() {
            let logger = Logger(label: "fence-test")
            let peers = PeerPool(timeoutMs: 100, logger: logger)
            let replication = Replication(me: "F", shardCount: 1, inner: nil, peers: peers, cacheLeaseMs: 0, logger: logger)
            let store = MemoryStore(shardCount: 1, changeLog: replication)
            replication.attach(store)
            let log = self.log
            let leases = ClusterLeases(me: "F", store: store, peers: peers, logger: logger, map: { nil })
            gate = NodeGate(
                me: "F", store: store, replication: replication, leases: leases, logger: logger,
                serving: { true }, stale: { _ in }, copied: { _, _ in },
                broken: { shard, incarnation, _ in log.calls.withLock { $0.append((shard, incarnation)) } })
        }

        static let nodes = ["S": ShardMap.Node(address: "127.0.0.1:1", incarnation: 3), "F": ShardMap.Node(address: "127.0.0.1:2", incarnation: 7)]
        static let joining = ShardMap(epoch: 1, replicas: 2, nodes: nodes, chains: [["S"]], joining: [ShardMap.Join(node: "F", source: "S", since: 1)])
        static let promoted = ShardMap(epoch: 2, replicas: 2, nodes: nodes, chains: [["S", "F"]])

        func send(_ message: ReplicationMessage, epoch: UInt64) async -> Result<Revision, WeftError> {
            await withCheckedContinuation { c in gate.replicate(message, epoch: epoch) { c.resume(returning: $0) } }
        }

        /// Receives a whole copy of the shard: `k` at revision 10.
        func copy() async throws {
            _ = try await send(ReplicationMessage(shard: 0, from: "S", kind: .snapshotBegin), epoch: 1).get()
            let kv = KeyValue(key: "k", value: Array("v10".utf8), version: 10, createRevision: 10)
            _ = try await send(ReplicationMessage(shard: 0, from: "S", kind: .snapshotEntry, entry: kv), epoch: 1).get()
            _ = try await send(ReplicationMessage(shard: 0, from: "S", kind: .snapshotEnd, revision: 10), epoch: 1).get()
        }

        func fence(revision: Revision) async -> Result<Revision, WeftError> {
            await send(ReplicationMessage(shard: 0, from: "S", kind: .fence, revision: revision), epoch: 2)
        }

        /// Whether a get of `k` is served here.
        var readable: Bool {
            if case .serve = gate.decide(.get(key: "k"), epoch: 2) { return true }
            return false
        }
    }

    @Test func aTailThatLacksItsPredecessorsChangesIsNotFencedInAndLeaves() async throws {
        let f = Joiner()
        f.gate.adopt(Joiner.joining)
        try await f.copy()
        f.gate.adopt(Joiner.promoted)
        #expect(!f.readable, "a new tail waits for its fence")
        // S acknowledged revision 11 as tail but never streamed it here (its stream broke).
        let refused = await f.fence(revision: 11)
        #expect(throws: WeftError.self) { try refused.get() }
        #expect(!f.readable)
        #expect(f.broken.isEmpty, "one refusal may be a change lost with a connection that the next resend makes good")
        _ = await f.fence(revision: 11)
        _ = await f.fence(revision: 11)
        #expect(!f.readable)
        let broken = f.broken
        #expect(broken.count == 1 && broken.first?.shard == 0 && broken.first?.incarnation == 7)
    }

    @Test func aTailThatHasEverythingIsFencedIn() async throws {
        let f = Joiner()
        f.gate.adopt(Joiner.joining)
        try await f.copy()
        f.gate.adopt(Joiner.promoted)
        let put = KeyValue(key: "k", value: Array("v11".utf8), version: 11, createRevision: 10)
        _ = try await f.send(ReplicationMessage(shard: 0, from: "S", kind: .put, entry: put, revision: 11, previous: 10), epoch: 2).get()
        _ = try await f.fence(revision: 11).get()
        #expect(f.readable)
        #expect(f.broken.isEmpty)
    }

    @Test func aNodePromotedWhileACopyIsStillArrivingLeaves() async throws {
        let f = Joiner()
        f.gate.adopt(Joiner.joining)
        try await f.copy()
        // The source started the copy over (its stream to F broke); F is promoted on its report
        // of the first copy before the second ends.
        _ = try await f.send(ReplicationMessage(shard: 0, from: "S", kind: .snapshotBegin), epoch: 1).get()
        f.gate.adopt(Joiner.promoted)
        #expect(f.broken.count == 1)
        let refused = await f.fence(revision: 10)
        #expect(throws: WeftError.self) { try refused.get() }
        #expect(!f.readable)
    }
}
