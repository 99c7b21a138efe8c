import Synchronization
import Testing
import WeftCore

/// What a cluster node asks of its store: the system's records, leases kept by the cluster,
/// replicas that remember leases, and watches "from now" per shard.
@Suite struct MemoryStoreClusterTests {
    @Test func recordsAreHiddenFromUsers() throws {
        let store = MemoryStore(shardCount: 4)
        let sink = RecordingSink()
        let registration = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: sink)
        defer { registration.cancel() }
        let record = InternalKeys.leaseRecord(42)
        let box = Mutex<Result<StateResponse, WeftError>?>(nil)
        store.putRecord(record, value: InternalKeys.ttlValue(7), ifVersion: 0) { r in box.withLock { $0 = r } }
        #expect(writtenVersion(try #require(box.withLock { $0 })) != nil)
        _ = run(store, .put(key: "user", value: bytes("v")))

        #expect(InternalKeys.lease(ofRecord: record) == 42)
        #expect(store.record(record).flatMap { InternalKeys.ttl(fromValue: $0.value) } == 7)
        #expect(store.records(prefix: InternalKeys.leasePrefix, shard: MemoryStore.shard(of: record, shardCount: 4)).count == 1)
        // Users can neither list, watch nor name it.
        guard case .list(let entries, _, _)? = try? run(store, .list(prefix: "", after: nil, limit: 100, keysOnly: true)).get() else {
            Issue.record("list failed")
            return
        }
        #expect(entries.map(\.key) == ["user"])
        #expect(sink.events.map(\.kv.key) == ["user"])
        #expect(code(run(store, .get(key: record))) == .invalidKey)
        #expect(code(run(store, .put(key: record, value: []))) == .invalidKey)
        // A second grant of the same id is refused.
        store.putRecord(record, value: InternalKeys.ttlValue(7), ifVersion: 0) { r in box.withLock { $0 = r } }
        #expect(code(try #require(box.withLock { $0 })) == .versionMismatch)
    }

    /// A replica keeps the lease of the keys it is sent, so that whichever replica heads the
    /// shard next can end them; `endLease` ends only the keys of the shards it is given.
    @Test func replicasRememberLeasesAndEndThemPerShard() throws {
        let store = MemoryStore(shardCount: 8)
        let keys = (0..<16).map { "k\($0)" }
        var previous: [Int: Revision] = [:]
        for (i, key) in keys.enumerated() {
            let s = MemoryStore.shard(of: key, shardCount: 8)
            let revision = Revision(i + 1)
            let kv = KeyValue(key: key, value: bytes("v"), version: revision, createRevision: revision, lease: 9)
            #expect(code(applyReplicated(store, .change(.put(kv), previous: previous[s] ?? 0))) == nil)
            previous[s] = revision
        }
        #expect(try store.read("k3") { $0?.lease } == 9)
        #expect(store.attachedLeases(inShards: { _ in true }) == [9])
        // Puts under an adopted lease are accepted; under an unknown one, refused.
        #expect(code(run(store, .put(key: "other", value: [], lease: 10))) == .leaseNotFound)
        store.adoptLease(10)
        #expect(code(run(store, .put(key: "other", value: [], lease: 10))) == nil)

        let headed: Set<Int> = [0, 1, 2, 3]
        let inHeaded = keys.filter { headed.contains(MemoryStore.shard(of: $0, shardCount: 8)) }
        let deleted = Mutex<Int?>(nil)
        store.endLease(9, inShards: { headed.contains($0) }) { n in deleted.withLock { $0 = n } }
        #expect(deleted.withLock { $0 } == inHeaded.count)
        for key in keys {
            let present = (try? store.read(key) { $0 != nil }) ?? false
            #expect(present == !inHeaded.contains(key), "\(key)")
        }
        // The rest go when their shards' deletes arrive; then the lease leaves the table.
        store.endLease(9, inShards: { _ in true }) { _ in }
        #expect(store.attachedLeases(inShards: { _ in true }) == [10])
    }

    /// A node's revision counter runs ahead of shards whose changes come from other heads: a
    /// watch "from now" of such a shard starts at the shard's next revision, not the node's.
    @Test func watchFromNowStartsAtTheShardsNextRevision() throws {
        let store = MemoryStore(shardCount: 2)
        let local = (0..<50).map { "a\($0)" }.first { MemoryStore.shard(of: $0, shardCount: 2) == 0 }!
        let remote = (0..<50).map { "b\($0)" }.first { MemoryStore.shard(of: $0, shardCount: 2) == 1 }!
        for _ in 0..<20 { _ = run(store, .put(key: local, value: bytes("x"))) }
        #expect(store.revision == 20)

        let keySink = RecordingSink()
        let shardSink = RecordingSink()
        let k = try store.watch(.key(remote), fromRevision: nil, includeValues: true, sink: keySink)
        let p = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: shardSink, shard: 1)
        defer {
            k.cancel()
            p.cancel()
        }
        #expect(k.startRevision == 1 && p.startRevision == 1)
        let kv = KeyValue(key: remote, value: bytes("from the head"), version: 5, createRevision: 5)
        #expect(code(applyReplicated(store, .change(.put(kv), previous: 0))) == nil)
        _ = run(store, .put(key: local, value: bytes("y")))
        #expect(keySink.revisions == [5])
        #expect(shardSink.revisions == [5])
    }
}
