import Logging
import Synchronization
import Testing
import WeftCore
@testable import WeftCluster

/// A lease ended on one node by two paths at once (its sweep, and the home's `leaseEnd` for a
/// revoke): each path's answer counts the keys either deleted, and comes once all are committed.
@Suite struct ClusterLeaseEndTests {
    /// A change log that holds every append's completion until released.
    final class HeldLog: ChangeLog {
        private let held = Mutex<[@Sendable (WeftError?) -> Void]>([])
        var pendingChangesMax: Int { 1_000 }
        var isDurable: Bool { false }

        func append(_ change: Change, revision: Revision, done: @escaping @Sendable (WeftError?) -> Void) {
            held.withLock { $0.append(done) }
        }

        var count: Int { held.withLock { $0.count } }

        func release() {
            let all = held.withLock { h in defer { h = [] }; return h }
            for done in all { done(nil) }
        }
    }

    final class Answers: Sendable {
        let all = Mutex<[String: Int]>([:])
        func note(_ path: String) -> @Sendable (Int) -> Void { { n in self.all.withLock { $0[path] = n } } }
        subscript(path: String) -> Int? { all.withLock { $0[path] } }
    }

    @Test func everyEndOfALeaseOnANodeCountsTheKeysAnyOfThemDeleted() async throws {
        let log = HeldLog()
        let store = MemoryStore(shardCount: 4, changeLog: log)
        let map = ShardMap(epoch: 1, replicas: 1, nodes: ["A": .init(address: "127.0.0.1:1")], chains: Array(repeating: ["A"], count: 4))
        let logger = Logger(label: "lease-end-test")
        let leases = ClusterLeases(me: "A", store: store, peers: PeerPool(timeoutMs: 100, logger: logger), logger: logger, map: { map })

        let lease: LeaseID = 77
        store.adoptLease(lease)
        let keys = (0..<6).map { "held/\($0)" }
        for key in keys {
            store.execute(.put(key: key, value: Array("v".utf8), lease: lease)) { _ in }
        }
        store.execute(.put(key: "free", value: Array("v".utf8))) { _ in }
        log.release()
        #expect(store.attachedLeases(inShards: { _ in true }) == [lease])

        // The sweep ends it first: its deletes are applied, not yet committed.
        let answers = Answers()
        leases.endHere(lease, completion: answers.note("sweep"))
        #expect(log.count == keys.count)
        // The home's end arrives meanwhile: nothing is left for it to delete, yet it waits.
        leases.endHere(lease, completion: answers.note("leaseEnd"))
        #expect(answers["sweep"] == nil && answers["leaseEnd"] == nil)

        log.release()
        #expect(answers["sweep"] == keys.count)
        #expect(answers["leaseEnd"] == keys.count)

        // An end arriving after all that still reports them (and deletes nothing more).
        leases.endHere(lease, completion: answers.note("late"))
        #expect(log.count == 0)
        #expect(answers["late"] == keys.count)
        #expect(store.attachedLeases(inShards: { _ in true }).isEmpty)
    }
}
