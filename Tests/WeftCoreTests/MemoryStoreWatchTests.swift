import Synchronization
import Testing
import WeftCore

@Suite struct MemoryStoreWatchTests {
    @Test func replaysFromARevisionThenFollowsLive() throws {
        let store = MemoryStore(shardCount: 1)
        _ = run(store, .put(key: "w/a", value: bytes("1")))  // 1
        _ = run(store, .put(key: "w/b", value: bytes("2")))  // 2
        _ = run(store, .put(key: "other", value: bytes("3")))  // 3
        _ = run(store, .delete(key: "w/a"))  // 4
        let sink = RecordingSink()
        let registration = try store.watch(.prefix("w/"), fromRevision: 2, includeValues: true, sink: sink)
        #expect(registration.startRevision == 2)
        _ = run(store, .append(key: "w/b", bytes: bytes("x")))  // 5
        #expect(sink.revisions == [2, 4, 5])
        #expect(sink.events[0] == WatchEvent(kind: .put, kv: KeyValue(key: "w/b", value: bytes("2"), version: 2, createRevision: 2)))
        #expect(sink.events[1] == WatchEvent(kind: .delete, kv: KeyValue(key: "w/a", value: [], version: 4, createRevision: 0)))
        #expect(sink.events[2].kv == KeyValue(key: "w/b", value: bytes("2x"), version: 5, createRevision: 2))
        registration.cancel()
        _ = run(store, .put(key: "w/c", value: []))
        #expect(sink.revisions == [2, 4, 5], "nothing after cancel")
    }

    @Test func keyWatchKeysOnlyFromNow() throws {
        let store = MemoryStore()
        _ = run(store, .put(key: "k", value: bytes("old")))
        let sink = RecordingSink()
        let registration = try store.watch(.key("k"), fromRevision: nil, includeValues: false, sink: sink)
        #expect(registration.startRevision == store.revision + 1)
        _ = run(store, .put(key: "k2", value: bytes("x")))
        _ = run(store, .put(key: "k", value: bytes("new")))
        #expect(sink.events == [WatchEvent(kind: .put, kv: KeyValue(key: "k", value: [], version: 3, createRevision: 1))])
    }

    /// With shards, a prefix replay is in order per key (per shard), not globally.
    @Test func replayAcrossShardsKeepsPerKeyOrder() throws {
        let store = MemoryStore(shardCount: 16)
        var written: [String: [Revision]] = [:]
        for i in 0..<200 {
            let key = "p/\(i % 10)"
            written[key, default: []].append(writtenVersion(run(store, .append(key: key, bytes: [UInt8(i)])))!)
        }
        let sink = RecordingSink()
        _ = try store.watch(.prefix("p/"), fromRevision: 1, includeValues: true, sink: sink)
        let seen = Dictionary(grouping: sink.events, by: \.kv.key).mapValues { $0.map(\.revision) }
        #expect(seen == written)
    }

    @Test func compactedWhenHistoryIsGone() throws {
        let store = MemoryStore(limits: StoreLimits(watchHistoryPerShard: 2), shardCount: 1)
        for i in 1...5 { _ = run(store, .put(key: "k\(i)", value: [])) }
        for from: Revision in [0, 1, 3] {
            #expect(throws: WeftError.self, "from \(from)") {
                try store.watch(.prefix(""), fromRevision: from, includeValues: true, sink: RecordingSink())
            }
        }
        do {
            _ = try store.watch(.key("k1"), fromRevision: 3, includeValues: true, sink: RecordingSink())
            Issue.record("expected compacted")
        } catch {
            #expect(error.code == .compacted)
        }
        let sink = RecordingSink()
        _ = try store.watch(.prefix(""), fromRevision: 4, includeValues: true, sink: sink)
        #expect(sink.revisions == [4, 5])
        guard case .success(.status(let status)) = run(store, .status) else { return }
        #expect(status.watchers == 1, "failed watches are not counted")
    }

    @Test func largeValuesLeaveTheHistory() throws {
        let store = MemoryStore(shardCount: 1)
        _ = run(store, .put(key: "small", value: bytes("s")))
        let live = RecordingSink()
        _ = try store.watch(.key("big"), fromRevision: nil, includeValues: true, sink: live)
        let big = writtenVersion(run(store, .put(key: "big", value: Array(repeating: 7, count: 5 << 20))))!
        #expect(live.events.map(\.kv.value.count) == [5 << 20], "live watchers still get it")
        #expect(throws: WeftError.self) {
            try store.watch(.prefix(""), fromRevision: big, includeValues: true, sink: RecordingSink())
        }
        _ = try store.watch(.prefix(""), fromRevision: big + 1, includeValues: true, sink: RecordingSink())
    }

    /// The history is bounded by value bytes too (here 4 MiB per shard): big values push out
    /// older events, and what is left replays in order.
    @Test func historyEvictsByBytesAndKeepsOrder() throws {
        let store = MemoryStore(limits: StoreLimits(watchHistoryPerShard: 8, watchHistoryValueBytesPerShard: 4 << 20), shardCount: 1)
        func put(_ key: String, _ count: Int) -> Revision {
            writtenVersion(run(store, .put(key: key, value: Array(repeating: UInt8(count % 251), count: count))))!
        }
        let big1 = put("big1", 3 << 20)  // 1
        _ = put("s0", 1)  // 2
        _ = put("s1", 2)  // 3
        _ = put("big2", 2 << 20)  // 4: pushes big1 out by bytes
        for i in 2..<6 { _ = put("s\(i)", i + 1) }  // 5...8: the ring grows after wrapping
        #expect(big1 == 1 && store.revision == 8)
        #expect(throws: WeftError.self) {
            try store.watch(.prefix(""), fromRevision: 1, includeValues: true, sink: RecordingSink())
        }
        let sink = RecordingSink()
        _ = try store.watch(.prefix(""), fromRevision: 2, includeValues: false, sink: sink)
        #expect(sink.revisions == Array(2...8))
        #expect(sink.events.map(\.kv.key) == ["s0", "s1", "big2", "s2", "s3", "s4", "s5"])
        // Two more: now the count bound (8) pushes out revisions 2.
        _ = put("s6", 7)
        _ = put("s7", 8)
        #expect(throws: WeftError.self) {
            try store.watch(.prefix(""), fromRevision: 2, includeValues: true, sink: RecordingSink())
        }
        let all = RecordingSink()
        _ = try store.watch(.prefix(""), fromRevision: 3, includeValues: true, sink: all)
        #expect(all.revisions == Array(3...10))
        #expect(all.events.map(\.kv.value.count) == [2, 2 << 20, 3, 4, 5, 6, 7, 8])
    }

    @Test func slowSinkIsCutOffWithCompacted() throws {
        let store = MemoryStore()
        let slow = RecordingSink(capacity: 2)
        let fine = RecordingSink()
        _ = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: slow)
        _ = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: fine)
        for i in 0..<5 { _ = run(store, .put(key: "key\(i)", value: [])) }
        #expect(slow.revisions == [1, 2])
        #expect(slow.refusals == 1, "removed from every shard after the first refusal")
        #expect(slow.termination?.code == .compacted)
        #expect(fine.revisions == [1, 2, 3, 4, 5] && fine.termination == nil)
        guard case .success(.status(let status)) = run(store, .status) else { return }
        #expect(status.watchers == 1)
    }

    @Test func sinkRefusingDuringReplayIsTerminated() throws {
        let store = MemoryStore(shardCount: 1)
        for i in 0..<3 { _ = run(store, .put(key: "r\(i)", value: [])) }
        let slow = RecordingSink(capacity: 1)
        _ = try store.watch(.prefix("r"), fromRevision: 1, includeValues: true, sink: slow)
        #expect(slow.revisions == [1] && slow.termination?.code == .compacted)
        _ = run(store, .put(key: "r9", value: []))
        #expect(slow.refusals == 1)
    }

    @Test func cancelFromInsideDeliverDoesNotDeadlock() throws {
        let store = MemoryStore(shardCount: 2)
        let registration = Mutex<(any WatchRegistration)?>(nil)
        let sink = RecordingSink(onDeliver: { _ in registration.withLock { $0 }?.cancel() })
        registration.withLock { $0 = try? store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: sink) }
        for i in 0..<10 { _ = run(store, .put(key: "c\(i)", value: [])) }
        #expect(sink.revisions == [1])
        guard case .success(.status(let status)) = run(store, .status) else { return }
        #expect(status.watchers == 0)
    }

    @Test func droppingTheStoreEndsItsWatches() throws {
        let sink = RecordingSink()
        do {
            let store = MemoryStore()
            _ = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: sink)
        }
        #expect(sink.termination?.code == .unavailable)
    }

    /// Writers on several threads to the same few keys while a prefix watcher collects: per key
    /// the watcher sees exactly the successful writes' versions, in increasing order.
    @Test func concurrentWritersAreSeenInOrderWithoutGaps() async throws {
        let store = MemoryStore(shardCount: 8)
        let sink = RecordingSink()
        _ = try store.watch(.prefix("hot/"), fromRevision: nil, includeValues: false, sink: sink)
        let seed = UInt64.random(in: 0...UInt64.max)
        let keys = (0..<4).map { "hot/\($0)" }
        let writers = (0..<4).map { writer in
            Task.detached { () -> [(String, Revision)] in
                var bits = OperationDecoder.Bits(state: seed &+ UInt64(writer))
                var successes: [(String, Revision)] = []
                for _ in 0..<1500 {
                    let key = keys[bits.next(keys.count)]
                    let request: StateRequest =
                        switch bits.next(4) {
                        case 0: .delete(key: key)
                        case 1: .append(key: key, bytes: [1])
                        default: .put(key: key, value: [UInt8(bits.next(256))])
                        }
                    if let version = writtenVersion(run(store, request)) { successes.append((key, version)) }
                }
                return successes
            }
        }
        var written: [String: [Revision]] = [:]
        for writer in writers {
            for (key, version) in await writer.value { written[key, default: []].append(version) }
        }
        let seen = Dictionary(grouping: sink.events, by: \.kv.key).mapValues { $0.map(\.revision) }
        for key in keys {
            let versions = seen[key] ?? []
            #expect(zip(versions, versions.dropFirst()).allSatisfy { $0 < $1 }, "\(key) out of order (seed \(seed))")
            #expect(versions == (written[key] ?? []).sorted(), "\(key): gaps or extras (seed \(seed))")
        }
        #expect(sink.events.count == written.values.reduce(0) { $0 + $1.count })
    }

    /// Watches registered while writers run (from now, or from a recent revision) see, per key,
    /// exactly the writes at or after their start revision: registration is atomic with replay.
    @Test func watchesStartedDuringWritesMissNothing() async throws {
        let store = MemoryStore(shardCount: 8)
        let seed = UInt64.random(in: 0...UInt64.max)
        let keys = (0..<6).map { "r/\($0)" }
        let writers = (0..<2).map { writer in
            Task.detached { () -> [(String, Revision)] in
                var bits = OperationDecoder.Bits(state: seed &+ UInt64(writer))
                var successes: [(String, Revision)] = []
                for _ in 0..<2000 {
                    let key = keys[bits.next(keys.count)]
                    let request: StateRequest = bits.next(5) == 0 ? .delete(key: key) : .put(key: key, value: [1])
                    if let version = writtenVersion(run(store, request)) { successes.append((key, version)) }
                }
                return successes
            }
        }
        var watches: [(sink: RecordingSink, start: Revision)] = []
        for i in 0..<30 {
            let sink = RecordingSink()
            let from: Revision? = i.isMultiple(of: 2) ? nil : store.revision / 2 + 1
            let registration = try store.watch(.prefix("r/"), fromRevision: from, includeValues: false, sink: sink)
            watches.append((sink, registration.startRevision))
            await Task.yield()
        }
        var written: [String: [Revision]] = [:]
        for writer in writers {
            for (key, version) in await writer.value { written[key, default: []].append(version) }
        }
        for (index, watch) in watches.enumerated() {
            let seen = Dictionary(grouping: watch.sink.events, by: \.kv.key).mapValues { $0.map(\.revision) }
            for key in keys {
                let expected = (written[key] ?? []).sorted().filter { $0 >= watch.start }
                #expect(seen[key] ?? [] == expected, "watch \(index) from \(watch.start), \(key) (seed \(seed))")
            }
        }
    }
}
