import Testing
import WeftCore

/// Edge cases and error codes of each operation.
@Suite struct MemoryStoreOperationTests {
    let store = MemoryStore(limits: StoreLimits(valueBytesMax: 16, listLimitMax: 5), shardCount: 8)

    @discardableResult
    func put(_ key: String, _ value: String, in store: MemoryStore? = nil, sourceLocation: SourceLocation = #_sourceLocation) -> Revision {
        let result = run(store ?? self.store, .put(key: key, value: bytes(value)))
        guard let version = writtenVersion(result) else {
            Issue.record("put '\(key)' failed: \(result)", sourceLocation: sourceLocation)
            return 0
        }
        return version
    }

    // MARK: Keys

    @Test func invalidKeysAreRejectedByEveryKeyedOperation() throws {
        let bad = ["", "a\u{0}b", String(repeating: "k", count: 1025)]
        for key in bad {
            let requests: [StateRequest] = [
                .get(key: key), .put(key: key, value: []), .writeRange(key: key, offset: 0, bytes: []),
                .append(key: key, bytes: []), .add(key: key, delta: 1), .delete(key: key),
            ]
            for request in requests {
                #expect(code(run(store, request)) == .invalidKey, "\(request)")
            }
        }
        #expect(code(run(store, .put(key: String(repeating: "k", count: 1024), value: []))) == nil)
        #expect(code(run(store, .list(prefix: "a\u{0}", limit: 1))) == .invalidKey)
        #expect(throws: WeftError.self) {
            try store.watch(.key(""), fromRevision: nil, includeValues: true, sink: RecordingSink())
        }
    }

    @Test func keyBytesAreValidated() throws {
        #expect(throws: WeftError(.invalidKey, "key is not valid UTF-8")) {
            try StateKey.validate(bytes: [0x61, 0xFF, 0x62])
        }
        #expect(throws: WeftError.self) { try StateKey.validate(bytes: [UInt8]()) }
        #expect(throws: WeftError.self) { try StateKey.validate(bytes: [0x61, 0x00]) }
        #expect(try StateKey.validate(bytes: Array("ok/é".utf8)) == "ok/é")
    }

    /// Keys are byte strings: canonically equivalent but different spellings are two keys.
    @Test func canonicallyEquivalentKeysAreDistinct() throws {
        let composed = "caf\u{E9}"
        let decomposed = "cafe\u{301}"
        #expect(composed == decomposed)  // Swift's String equality...
        put(composed, "one")
        put(decomposed, "two")  // ...but the store keeps both.
        guard case .success(.value(let a)) = run(store, .get(key: composed)),
              case .success(.value(let b)) = run(store, .get(key: decomposed))
        else { Issue.record("get failed"); return }
        #expect(a.value == bytes("one") && b.value == bytes("two"))
        guard case .success(.list(let entries, _, _)) = run(store, .list(prefix: "caf", limit: 5)) else { return }
        #expect(entries.map { Array($0.key.utf8) } == [Array(composed.utf8), Array(decomposed.utf8)].sorted { $0.lexicographicallyPrecedes($1) })
    }

    @Test func shardIsFNV1aOfTheUTF8Bytes() {
        // FNV-1a 64: "a" → 0xaf63dc4c8601ec8c, "foobar" → 0x85944171f73967e8.
        #expect(MemoryStore.shard(of: "a", shardCount: 64) == Int(0xaf63_dc4c_8601_ec8c as UInt64 % 64))
        #expect(MemoryStore.shard(of: "foobar", shardCount: 1000) == Int(0x8594_4171_f739_67e8 as UInt64 % 1000))
        #expect(MemoryStore.shard(of: "anything", shardCount: 1) == 0)
    }

    // MARK: Get

    @Test func getRangesAndConditionalGets() throws {
        let version = put("k", "hello")
        #expect(try run(store, .get(key: "k", range: ByteRange(offset: 1, length: 3))).get() == .value(KeyValue(key: "k", value: bytes("ell"), version: version, createRevision: version)))
        #expect(try run(store, .get(key: "k", range: ByteRange(offset: 3, length: .max))).get() == .value(KeyValue(key: "k", value: bytes("lo"), version: version, createRevision: version)))
        #expect(try run(store, .get(key: "k", range: ByteRange(offset: 5, length: 2))).get() == .value(KeyValue(key: "k", value: [], version: version, createRevision: version)))
        #expect(code(run(store, .get(key: "k", range: ByteRange(offset: 6, length: 0)))) == .outOfRange)
        #expect(try run(store, .get(key: "k", ifChangedSince: version)).get() == .notModified(version: version))
        #expect(try run(store, .get(key: "k", ifChangedSince: version + 5)).get() == .notModified(version: version))
        #expect(code(run(store, .get(key: "k", ifChangedSince: version - 1))) == nil)
        #expect(code(run(store, .get(key: "absent", ifChangedSince: 0))) == .notFound)
        #expect(code(run(store, .get(key: "absent"))) == .notFound)
    }

    // MARK: Put

    @Test func conditionalPutAndCreateRevision() throws {
        #expect(code(run(store, .put(key: "k", value: bytes("x"), ifVersion: 3))) == .versionMismatch)
        let v1 = writtenVersion(run(store, .put(key: "k", value: bytes("x"), ifVersion: 0)))!
        let mismatch = run(store, .put(key: "k", value: bytes("y"), ifVersion: 0))
        #expect(mismatch == .failure(.versionMismatch("k", expected: 0, actual: v1)))
        let v2 = writtenVersion(run(store, .put(key: "k", value: bytes("yy"), ifVersion: v1)))!
        #expect(v2 > v1)
        #expect(try run(store, .get(key: "k")).get() == .value(KeyValue(key: "k", value: bytes("yy"), version: v2, createRevision: v1)))
        _ = run(store, .delete(key: "k"))
        let v3 = put("k", "z")
        #expect(try run(store, .get(key: "k")).get() == .value(KeyValue(key: "k", value: bytes("z"), version: v3, createRevision: v3)))
    }

    @Test func valueSizeLimitHoldsForEveryWrite() throws {
        #expect(code(run(store, .put(key: "k", value: Array(repeating: 1, count: 17)))) == .valueTooLarge)
        #expect(code(run(store, .put(key: "k", value: Array(repeating: 1, count: 16)))) == nil)
        #expect(code(run(store, .append(key: "k", bytes: [1]))) == .valueTooLarge)
        #expect(code(run(store, .writeRange(key: "k", offset: 10, bytes: Array(repeating: 2, count: 6)))) == nil)
        #expect(code(run(store, .writeRange(key: "k", offset: 11, bytes: Array(repeating: 2, count: 6)))) == .valueTooLarge)
        #expect(code(run(store, .append(key: "new", bytes: Array(repeating: 1, count: 17)))) == .valueTooLarge)
        #expect(code(run(store, .get(key: "new"))) == .notFound)
    }

    // MARK: Write range, append

    @Test func writeRangeOverwritesAndExtends() throws {
        #expect(code(run(store, .writeRange(key: "w", offset: 1, bytes: bytes("x")))) == .outOfRange)
        #expect(try run(store, .writeRange(key: "w", offset: 0, bytes: bytes("abc"))).get() == .written(version: store.revision, length: 3))
        #expect(try run(store, .writeRange(key: "w", offset: 1, bytes: bytes("XYZW"))).get() == .written(version: store.revision, length: 5))
        #expect(try run(store, .writeRange(key: "w", offset: 5, bytes: bytes("!"))).get() == .written(version: store.revision, length: 6))
        #expect(try run(store, .writeRange(key: "w", offset: 0, bytes: bytes("-"))).get() == .written(version: store.revision, length: 6))
        #expect(code(run(store, .writeRange(key: "w", offset: 7, bytes: []))) == .outOfRange)
        #expect(code(run(store, .writeRange(key: "w", offset: 0, bytes: [], ifVersion: 1))) == .versionMismatch)
        guard case .success(.value(let kv)) = run(store, .get(key: "w")) else { Issue.record("get"); return }
        #expect(kv.value == bytes("-XYZW!"))
    }

    @Test func appendCreatesAndExtends() throws {
        let v1 = writtenVersion(run(store, .append(key: "log", bytes: bytes("ab"))))!
        #expect(try run(store, .append(key: "log", bytes: bytes("cd"), ifVersion: v1)).get() == .written(version: v1 + 1, length: 4))
        #expect(code(run(store, .append(key: "log", bytes: bytes("e"), ifVersion: v1))) == .versionMismatch)
        #expect(code(run(store, .append(key: "fresh", bytes: bytes("e"), ifVersion: 3))) == .versionMismatch)
        guard case .success(.value(let kv)) = run(store, .get(key: "log")) else { Issue.record("get"); return }
        #expect(kv.value == bytes("abcd") && kv.createRevision == v1)
    }

    // MARK: Add

    @Test func addCountsInDecimal() throws {
        let store = MemoryStore()  // room for 20-digit counters
        #expect(try run(store, .add(key: "n", delta: 42)).get() == .counter(value: 42, version: store.revision))
        #expect(try run(store, .add(key: "n", delta: -50)).get() == .counter(value: -8, version: store.revision))
        guard case .success(.value(let kv)) = run(store, .get(key: "n")) else { Issue.record("get"); return }
        #expect(kv.value == bytes("-8"))
        put("text", "12a", in: store)
        #expect(code(run(store, .add(key: "text", delta: 1))) == .invalidArgument)
        put("empty", "", in: store)
        #expect(code(run(store, .add(key: "empty", delta: 1))) == .invalidArgument)
        put("max", String(Int64.max), in: store)
        let before = store.revision
        #expect(code(run(store, .add(key: "max", delta: 1))) == .outOfRange)
        #expect(store.revision == before, "a failed add takes no revision")
        #expect(try run(store, .add(key: "max", delta: -1)).get() == .counter(value: .max - 1, version: store.revision))
        _ = try run(store, .add(key: "min", delta: .min)).get()
        #expect(code(run(store, .add(key: "min", delta: -1))) == .outOfRange)
    }

    // MARK: Delete

    @Test func deleteConditionsAndReply() throws {
        #expect(code(run(store, .delete(key: "d"))) == .notFound)
        #expect(code(run(store, .delete(key: "d", ifVersion: 0))) == .notFound)
        let v = put("d", "x")
        #expect(code(run(store, .delete(key: "d", ifVersion: v + 1))) == .versionMismatch)
        #expect(try run(store, .delete(key: "d", ifVersion: v)).get() == .deleted(revision: v + 1, previousVersion: v))
        #expect(code(run(store, .get(key: "d"))) == .notFound)
        #expect(code(run(store, .delete(key: "d"))) == .notFound)
    }

    // MARK: List

    @Test func listPagesInByteOrderAcrossShards() throws {
        let keys = ["app/b", "app/a", "app/c", "app/aa", "apple", "b", "app/é", "app/z", "app/~"]
        for key in keys { put(key, "v-\(key)") }
        guard case .success(.list(let page1, let more1, let revision)) = run(store, .list(prefix: "app/", limit: 3)) else {
            Issue.record("list"); return
        }
        #expect(page1.map(\.key) == ["app/a", "app/aa", "app/b"])
        #expect(more1 && revision == store.revision)
        #expect(page1[0].value == bytes("v-app/a"))
        guard case .success(.list(let page2, let more2, _)) = run(store, .list(prefix: "app/", after: "app/b", limit: 100, keysOnly: true)) else {
            Issue.record("list"); return
        }
        // Limit clamped to listLimitMax (5); "é" (0xC3 0xA9) sorts after "~" (0x7E) in bytes.
        #expect(page2.map(\.key) == ["app/c", "app/z", "app/~", "app/é"])
        #expect(!more2 && page2.allSatisfy { $0.value.isEmpty })
        guard case .success(.list(let all, let moreAll, _)) = run(store, .list(prefix: "", limit: 0)) else { return }
        #expect(all.map(\.key) == ["app/a"] && moreAll, "limit 0 is clamped to 1")
        guard case .success(.list(let none, let moreNone, _)) = run(store, .list(prefix: "zzz", limit: 5)) else { return }
        #expect(none.isEmpty && !moreNone)
    }

    // MARK: Status

    @Test func statusCountsKeysBytesAndWatchers() throws {
        put("a", "123")
        put("b", "45")
        _ = run(store, .append(key: "a", bytes: bytes("6")))
        let registration = try store.watch(.prefix(""), fromRevision: nil, includeValues: true, sink: RecordingSink())
        guard case .success(.status(let status)) = run(store, .status) else { Issue.record("status"); return }
        #expect(status == StoreStatus(revision: 3, keys: 2, valueBytes: 6, shards: 8, leases: 0, watchers: 1, durable: false))
        registration.cancel()
        registration.cancel()
        guard case .success(.status(let after)) = run(store, .status) else { return }
        #expect(after.watchers == 0)
    }
}
