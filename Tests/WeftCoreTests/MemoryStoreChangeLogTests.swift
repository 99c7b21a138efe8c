import Synchronization
import Testing
import WeftCore

/// The durability hook: replies and watch events wait for the log; recovery.
@Suite struct MemoryStoreChangeLogTests {
    final class Replies: Sendable {
        let results = Mutex<[Result<StateResponse, WeftError>]>([])
        func completion() -> @Sendable (Result<StateResponse, WeftError>) -> Void {
            { result in self.results.withLock { $0.append(result) } }
        }
        var all: [Result<StateResponse, WeftError>] { results.withLock { $0 } }
    }

    @Test func repliesAndEventsWaitForDone() async throws {
        let log = ManualChangeLog()
        let store = MemoryStore(changeLog: log)
        let sink = RecordingSink()
        _ = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: sink)
        let replies = Replies()
        store.execute(.put(key: "a", value: bytes("1")), completion: replies.completion())
        store.execute(.append(key: "a", bytes: bytes("2")), completion: replies.completion())
        store.execute(.delete(key: "b"), completion: replies.completion())  // fails at once: not logged

        #expect(log.records == [
            .init(change: .put(KeyValue(key: "a", value: bytes("1"), version: 1, createRevision: 1)), revision: 1),
            .init(change: .put(KeyValue(key: "a", value: bytes("12"), version: 2, createRevision: 1)), revision: 2),
        ])
        #expect(replies.all.map(code) == [.notFound], "only the failure has replied")
        #expect(sink.events.isEmpty)
        #expect(run(store, .get(key: "a")).map { _ in true } == .success(true), "applied in memory")
        guard case .success(.status(let status)) = run(store, .status) else { return }
        #expect(status.durable)

        // Complete from another thread.
        await Task.detached { log.completeAll() }.value
        #expect(replies.all.count == 3)
        #expect(try replies.all[1].get() == .written(version: 1, length: 1))
        #expect(try replies.all[2].get() == .written(version: 2, length: 2))
        #expect(sink.revisions == [1, 2])
    }

    @Test func asyncExecuteResumesWhenTheLogCompletes() async throws {
        let log = ManualChangeLog()
        let store = MemoryStore(changeLog: log)
        let completer = Task.detached {
            while log.pendingCount == 0 { try await Task.sleep(for: .milliseconds(1)) }
            log.completeAll()
        }
        let reply = try await store.execute(.add(key: "n", delta: 5))
        #expect(reply == .counter(value: 5, version: 1))
        try await completer.value
    }

    @Test func logErrorsReachTheCallerAndHideTheEvent() async throws {
        let log = ManualChangeLog()
        let store = MemoryStore(changeLog: log)
        let sink = RecordingSink()
        _ = try store.watch(.key("k"), fromRevision: nil, includeValues: true, sink: sink)
        let replies = Replies()
        store.execute(.put(key: "k", value: []), completion: replies.completion())
        await Task.detached { log.completeAll(error: WeftError(.storageFailure, "disk full")) }.value
        #expect(replies.all.map(code) == [.storageFailure])
        #expect(sink.events.isEmpty)
    }

    @Test func leasesAreLoggedAndRevokeFollowsItsDeletes() async throws {
        let log = ManualChangeLog()
        let store = MemoryStore(changeLog: log)
        let replies = Replies()
        store.execute(.leaseGrant(ttlSeconds: 30, id: 9), completion: replies.completion())
        store.execute(.put(key: "x", value: [], lease: 9), completion: replies.completion())
        store.execute(.put(key: "y", value: [], lease: 9), completion: replies.completion())
        log.completeAll()
        store.execute(.leaseRevoke(id: 9), completion: replies.completion())
        #expect(replies.all.count == 3)
        log.completeAll()
        #expect(try replies.all[0].get() == .lease(id: 9, ttlSeconds: 30))
        #expect(try replies.all[3].get() == .leaseRevoked(id: 9, keysDeleted: 2))
        let changes = log.records.map(\.change)
        #expect(changes.first == .leaseGrant(id: 9, ttlSeconds: 30))
        #expect(changes.last == .leaseRevoke(id: 9))
        #expect(changes.filter { if case .delete = $0 { true } else { false } }.count == 2)
        let revisions = log.records.map(\.revision)
        #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count)
    }

    @Test func recoveryContinuesAbovePendingChanges() async throws {
        let clock = FakeClock()
        let log = ManualChangeLog(pendingChangesMax: 100)
        let recovered = RecoveredState(
            entries: [
                KeyValue(key: "kept", value: bytes("v"), version: 10, createRevision: 4, lease: 7),
                KeyValue(key: "orphan", value: bytes("o"), version: 8, createRevision: 8, lease: 99),
                KeyValue(key: "plain", value: bytes("p"), version: 9, createRevision: 2),
            ],
            leases: [(id: 7, ttlSeconds: 30)],
            revision: 10)
        let store = MemoryStore(changeLog: log, recovered: recovered, nowMs: clock.now)
        #expect(store.revision == 110)
        #expect(run(store, .get(key: "kept")) == .success(.value(KeyValue(key: "kept", value: bytes("v"), version: 10, createRevision: 4, lease: 7))))
        #expect(run(store, .leaseKeepAlive(id: 7)) == .success(.lease(id: 7, ttlSeconds: 30)))

        for from: Revision in [1, 10, 110] {
            #expect(throws: WeftError.self, "from \(from)") {
                try store.watch(.prefix(""), fromRevision: from, includeValues: true, sink: RecordingSink())
            }
        }
        let sink = RecordingSink()
        _ = try store.watch(.prefix(""), fromRevision: 111, includeValues: true, sink: sink)

        let replies = Replies()
        store.execute(.put(key: "plain", value: bytes("q")), completion: replies.completion())
        // The key whose lease was not recovered is deleted by the next expiry.
        #expect(store.expireLeases() == 1)
        log.completeAll()
        #expect(try replies.all[0].get() == .written(version: 111, length: 1))
        #expect(code(run(store, .get(key: "orphan"))) == .notFound)
        #expect(sink.events.map(\.kind) == [.put, .delete])
        #expect(sink.revisions.allSatisfy { $0 > 110 })
        guard case .value(let plain) = try run(store, .get(key: "plain")).get() else { return }
        #expect(plain.createRevision == 2 && plain.version == 111)
    }
}
