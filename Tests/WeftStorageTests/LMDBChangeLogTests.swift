import Dispatch
import Foundation
import Synchronization
import Testing
import WeftTestSupport
import WeftCore
@testable import WeftStorage

@Suite("LMDBChangeLog", .ownThread)
struct LMDBChangeLogTests {
    private func sortedLeases(_ state: RecoveredState) -> [[Int64]] {
        state.leases.map { [$0.id, $0.ttlSeconds] }.sorted { $0[0] < $1[0] }
    }

    @Test("puts, deletes, lease grants and revokes survive close and reopen", arguments: LMDBChangeLog.SyncMode.allCases)
    func roundTrip(mode: LMDBChangeLog.SyncMode) throws {
        try withTempDir { dir in
            let path = dir.sub("state")  // parent and dir are created
            let log = try LMDBChangeLog(directory: path, sync: mode)
            let done = Completions()
            let changes: [(Change, Revision)] = [
                (.leaseGrant(id: 7, ttlSeconds: 30), 1),
                (.leaseGrant(id: -3, ttlSeconds: 5), 2),
                (.put(KeyValue(key: "a", value: bytes("one"), version: 3, createRevision: 3)), 3),
                (.put(KeyValue(key: "b/c", value: bytes("two"), version: 4, createRevision: 4, lease: 7)), 4),
                (.put(KeyValue(key: "a", value: bytes("uno"), version: 5, createRevision: 3)), 5),
                (.put(KeyValue(key: "gone", value: bytes("x"), version: 6, createRevision: 6)), 6),
                (.put(KeyValue(key: "empty", value: [], version: 7, createRevision: 7)), 7),
                (.delete(key: "gone", revision: 8), 8),
                (.leaseRevoke(id: -3), 9),
                (.leaseGrant(id: 12, ttlSeconds: 60), 10),
                // The highest revision is one only a delete (of an absent key) had.
                (.delete(key: "never-existed", revision: 11), 11),
            ]
            for (change, revision) in changes {
                log.append(change, revision: revision, done: done.callback(revision))
            }
            #expect(done.wait())
            #expect(done.errors.isEmpty)
            #expect(done.tags == Array(1...11))
            log.close()

            let reopened = try LMDBChangeLog(directory: path, sync: mode)
            defer { reopened.close() }
            let state = try reopened.recover()
            #expect(state.revision == 11)
            #expect(state.entries == [
                KeyValue(key: "a", value: bytes("uno"), version: 5, createRevision: 3),
                KeyValue(key: "b/c", value: bytes("two"), version: 4, createRevision: 4, lease: 7),
                KeyValue(key: "empty", value: [], version: 7, createRevision: 7),
            ])
            #expect(sortedLeases(state) == [[7, 30], [12, 60]])
        }
    }

    @Test("a new directory recovers as empty; recover works while open")
    func emptyRecover() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch)
            defer { log.close() }
            let state = try log.recover()
            #expect(state.entries.isEmpty && state.leases.isEmpty && state.revision == 0)
            let done = Completions()
            log.append(.put(KeyValue(key: "k", value: [1], version: 1, createRevision: 1)), revision: 1, done: done.callback(1))
            #expect(done.wait())
            #expect(try log.recover().entries.map(\.key) == ["k"])
        }
    }

    @Test("done callbacks run in append order", arguments: LMDBChangeLog.SyncMode.allCases)
    func completionOrder(mode: LMDBChangeLog.SyncMode) throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: mode, pendingChangesMax: 64)
            defer { log.close() }
            let done = Completions()
            for revision in Revision(1)...2000 {
                let change: Change = revision % 5 == 0
                    ? .delete(key: "k\(revision % 37)", revision: revision)
                    : .put(KeyValue(key: "k\(revision % 37)", value: bytes("\(revision)"), version: revision, createRevision: revision))
                log.append(change, revision: revision, done: done.callback(revision))
            }
            #expect(done.wait())
            #expect(done.errors.isEmpty)
            #expect(done.tags == Array(1...2000))
            let stats = log.stats
            #expect(stats.changes == 2000)
            #expect(stats.commits >= 1 && stats.commits <= 2000)
            if mode == .always { #expect(stats.syncs >= stats.commits) }
        }
    }

    @Test("many threads appending under a shard lock: all complete in order, recover sees the end state",
          arguments: LMDBChangeLog.SyncMode.allCases)
    func concurrentAppends(mode: LMDBChangeLog.SyncMode) throws {
        try withTempDir { dir in
            // A small pendingChangesMax exercises backpressure.
            let log = try LMDBChangeLog(directory: dir.path, sync: mode, pendingChangesMax: 256)
            let done = Completions()
            let shard = Mutex<Revision>(0)
            let threads = 4, perThread = 2000, keysPerThread = 100
            onThreads(threads) { t in
                for i in 0..<perThread {
                    shard.withLock { revision in
                        revision += 1
                        let entry = KeyValue(key: "t\(t)/k\(i % keysPerThread)", value: bytes("\(t):\(i)"),
                                             version: revision, createRevision: revision)
                        log.append(.put(entry), revision: revision, done: done.callback(revision))
                    }
                }
            }
            #expect(done.wait())
            #expect(done.errors.isEmpty)
            #expect(done.count == threads * perThread)
            #expect(done.tags == Array(1...Revision(threads * perThread)))
            log.close()

            let reopened = try LMDBChangeLog(directory: dir.path, sync: mode)
            defer { reopened.close() }
            let state = try reopened.recover()
            #expect(state.revision == Revision(threads * perThread))
            #expect(state.entries.count == threads * keysPerThread)
            let values = Dictionary(uniqueKeysWithValues: state.entries.map { ($0.key, String(decoding: $0.value, as: UTF8.self)) })
            for t in 0..<threads {
                for k in 0..<keysPerThread {
                    #expect(values["t\(t)/k\(k)"] == "\(t):\(perThread - keysPerThread + k)")
                }
            }
        }
    }

    @Test("a 4 MiB value round-trips")
    func largeValue() throws {
        try withTempDir { dir in
            let value = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
            let log = try LMDBChangeLog(directory: dir.path, sync: .always)
            let done = Completions()
            log.append(.put(KeyValue(key: "big", value: value, version: 1, createRevision: 1)), revision: 1, done: done.callback(1))
            #expect(done.wait())
            #expect(done.errors.isEmpty)
            log.close()
            let reopened = try LMDBChangeLog(directory: dir.path, sync: .always)
            defer { reopened.close() }
            let state = try reopened.recover()
            #expect(state.entries.count == 1)
            #expect(state.entries.first?.value == value)
        }
    }

    @Test("keys longer than LMDB's 511-byte key limit are stored, replaced and deleted")
    func longKeys() throws {
        try withTempDir { dir in
            let long1 = String(repeating: "x", count: 1024)
            let long2 = String(repeating: "x", count: 600) + "/y"
            let long3 = String(repeating: "é", count: 300)  // 600 UTF-8 bytes
            let edge = String(repeating: "e", count: 511)
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch)
            let done = Completions()
            let changes: [Change] = [
                .put(KeyValue(key: long1, value: [1], version: 1, createRevision: 1)),
                .put(KeyValue(key: long2, value: [2], version: 2, createRevision: 2)),
                .put(KeyValue(key: long3, value: [3], version: 3, createRevision: 3)),
                .put(KeyValue(key: edge, value: [4], version: 4, createRevision: 4)),
                .put(KeyValue(key: long1, value: [5], version: 5, createRevision: 1)),
                .delete(key: long2, revision: 6),
            ]
            for (i, change) in changes.enumerated() {
                log.append(change, revision: Revision(i + 1), done: done.callback(Revision(i + 1)))
            }
            #expect(done.wait())
            #expect(done.errors.isEmpty)
            log.close()
            let reopened = try LMDBChangeLog(directory: dir.path, sync: .batch)
            defer { reopened.close() }
            let state = try reopened.recover()
            #expect(state.entries == [
                KeyValue(key: edge, value: [4], version: 4, createRevision: 4),
                KeyValue(key: long1, value: [5], version: 5, createRevision: 1),
                KeyValue(key: long3, value: [3], version: 3, createRevision: 3),
            ])
            #expect(state.revision == 6)
        }
    }

    @Test("long keys that share a bucket (same prefix and hash) stay apart")
    func bucketCollisions() throws {
        let a = [UInt8](repeating: 0x61, count: 700)
        let b = [UInt8](repeating: 0x62, count: 700)
        let bucket = RecordCodec.encodeBucket([.init(key: a, record: [1, 2]), .init(key: b, record: [])])
        let decoded = try withRawBytes(bucket) { raw throws(WeftError) in try RecordCodec.decodeBucket(raw) }
        #expect(decoded.map(\.key) == [a, b])
        #expect(decoded.map(\.record) == [[1, 2], []])
        let truncated = Array(bucket.dropLast(1))
        var truncatedError: WeftError?
        do throws(WeftError) {
            _ = try withRawBytes(truncated) { raw throws(WeftError) in try RecordCodec.decodeBucket(raw) }
        } catch {
            truncatedError = error
        }
        #expect(truncatedError?.code == .storageFailure)
    }

    @Test("a directory holding a data.mdb of random bytes is refused")
    func foreignFile() throws {
        try withTempDir { dir in
            try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
            let random = (0..<65_536).map { _ in UInt8.random(in: 0...255) }
            try Data(random).write(to: dir.url.appendingPathComponent("data.mdb"))
            let error = openError(dir.path)
            #expect(error?.code == .storageFailure)
            #expect(error?.message.contains(dir.path) == true || error?.message.contains("data.mdb") == true)
            #expect(error?.message.contains("LMDB") == true)
        }
    }

    @Test("a non-empty directory without LMDB files is refused, not initialised")
    func foreignDirectory() throws {
        try withTempDir { dir in
            try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
            try Data("hello".utf8).write(to: dir.url.appendingPathComponent("notes.txt"))
            let error = openError(dir.path)
            #expect(error?.code == .storageFailure)
            #expect(error?.message.contains("notes.txt") == true)
            #expect(!FileManager.default.fileExists(atPath: dir.sub("data.mdb")))
        }
    }

    @Test("an LMDB environment without Weft's format record is refused")
    func foreignEnvironment() throws {
        try withTempDir { dir in
            let plain = dir.sub("plain")
            try RawLMDB.write(plain) { txn in
                try RawLMDB.put(txn, try RawLMDB.open(txn, nil), bytes("hello"), bytes("world"))
            }
            let plainError = openError(plain)
            #expect(plainError?.code == .storageFailure)
            #expect(plainError?.message.contains("not Weft state") == true)

            let noMagic = dir.sub("nomagic")
            try RawLMDB.write(noMagic) { txn in
                try RawLMDB.put(txn, try RawLMDB.open(txn, "meta"), bytes("other"), bytes("thing"))
            }
            #expect(openError(noMagic)?.code == .storageFailure)

            let wrongMagic = dir.sub("wrongmagic")
            try RawLMDB.write(wrongMagic) { txn in
                try RawLMDB.put(txn, try RawLMDB.open(txn, "meta"), bytes("format"), bytes("redis-v7"))
            }
            #expect(openError(wrongMagic)?.message.contains("not Weft state") == true)
        }
    }

    @Test("a newer format version is refused")
    func newerFormat() throws {
        try withTempDir { dir in
            try RawLMDB.write(dir.path) { txn in
                try RawLMDB.put(txn, try RawLMDB.open(txn, "meta"), bytes("format"), bytes("weft-state-v2"))
            }
            let error = openError(dir.path)
            #expect(error?.code == .storageFailure)
            #expect(error?.message.contains("newer") == true)
        }
    }

    @Test("a directory that cannot be created is refused")
    func uncreatableDirectory() throws {
        try withTempDir { dir in
            try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
            let file = dir.sub("a-file")
            try Data("x".utf8).write(to: URL(fileURLWithPath: file))
            let error = openError(file + "/state")
            #expect(error?.code == .storageFailure)
            #expect(error?.message.contains("cannot create") == true)
            let notDir = openError(file)
            #expect(notDir?.code == .storageFailure)
        }
    }

    @Test("a record that does not decode fails recover() with storageFailure")
    func corruptRecord() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .always)
            let done = Completions()
            log.append(.put(KeyValue(key: "ok", value: [1], version: 1, createRevision: 1)), revision: 1, done: done.callback(1))
            #expect(done.wait())
            log.close()
            try RawLMDB.write(dir.path) { txn in
                try RawLMDB.put(txn, try RawLMDB.open(txn, "kv"), bytes("bad"), [1, 2, 3])
            }
            let reopened = try LMDBChangeLog(directory: dir.path, sync: .always)
            defer { reopened.close() }
            #expect {
                _ = try reopened.recover()
            } throws: { error in
                (error as? WeftError)?.code == .storageFailure && "\(error)".contains("bad")
            }
        }
    }

    @Test("the same directory cannot be open twice in one process")
    func openTwice() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch)
            #expect(openError(dir.path)?.message.contains("already open") == true)
            log.close()
            #expect(openError(dir.path) == nil)
        }
    }

    @Test("a full map gives storageFailure; the log then stops, and what is durable stays readable")
    func mapFull() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch, mapSizeBytes: 1 << 20)
            let done = Completions()
            log.append(.put(KeyValue(key: "small", value: [1], version: 1, createRevision: 1)), revision: 1, done: done.callback(1))
            #expect(done.wait())
            let failed = Completions()
            log.append(.put(KeyValue(key: "big", value: [UInt8](repeating: 7, count: 4 << 20), version: 2, createRevision: 2)),
                       revision: 2, done: failed.callback(2))
            #expect(failed.wait())
            #expect(failed.errors.first?.code == .storageFailure)
            #expect(failed.errors.first?.message.contains("MDB_MAP_FULL") == true)
            let later = Completions()
            log.append(.delete(key: "small", revision: 3), revision: 3, done: later.callback(3))
            #expect(later.wait())
            #expect(later.errors.first?.message.contains("stopped") == true)
            #expect(log.stats.failures == 1)
            log.close()
            let reopened = try LMDBChangeLog(directory: dir.path, sync: .batch, mapSizeBytes: 64 << 20)
            defer { reopened.close() }
            let state = try reopened.recover()
            #expect(state.entries.map(\.key) == ["small"])
            #expect(state.revision == 1)
        }
    }

    @Test("appends after close complete with storageFailure; close is idempotent; bad keys are refused")
    func afterClose() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch)
            let done = Completions()
            log.append(.put(KeyValue(key: "", value: [1], version: 1, createRevision: 1)), revision: 1, done: done.callback(1))
            log.append(.put(KeyValue(key: "k", value: [1], version: 2, createRevision: 2)), revision: 2, done: done.callback(2))
            log.close()  // drains
            #expect(done.count == 2)
            #expect(done.errors.map(\.code) == [.invalidKey])
            log.close()
            let late = Completions()
            log.append(.delete(key: "k", revision: 3), revision: 3, done: late.callback(3))
            #expect(late.wait(seconds: 5))
            #expect(late.errors.first?.code == .storageFailure)
            #expect(throws: WeftError.self) { try log.recover() }
        }
    }

    @Test("append blocks while pendingChangesMax changes are pending")
    func backpressure() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch, pendingChangesMax: 2)
            defer { log.close() }
            let inFirstDone = DispatchSemaphore(value: 0)
            let gate = DispatchSemaphore(value: 0)
            let done = Completions()
            let first = done.callback(1)
            @Sendable func put(_ revision: Revision) -> Change {
                .put(KeyValue(key: "k\(revision)", value: [1], version: revision, createRevision: revision))
            }
            // The writer sits in the first `done` until the gate opens, so nothing drains.
            log.append(put(1), revision: 1) { error in
                first(error)
                inFirstDone.signal()
                gate.wait()
            }
            inFirstDone.wait()
            log.append(put(2), revision: 2, done: done.callback(2))
            log.append(put(3), revision: 3, done: done.callback(3))  // 2 pending: full
            let returned = Atomic<Bool>(false)
            let appender = DispatchSemaphore(value: 0)
            let fourth = done.callback(4)
            Thread {
                log.append(put(4), revision: 4, done: fourth)
                returned.store(true, ordering: .sequentiallyConsistent)
                appender.signal()
            }.start()
            Thread.sleep(forTimeInterval: 0.2)
            let returnedEarly = returned.load(ordering: .sequentiallyConsistent)
            #expect(!returnedEarly)
            gate.signal()
            #expect(appender.wait(timeout: .now() + 10) == .success)
            #expect(done.wait(seconds: 10))
            #expect(done.tags == [1, 2, 3, 4])
            #expect(done.errors.isEmpty)
        }
    }

    @Test("close() from a done callback does not deadlock", arguments: LMDBChangeLog.SyncMode.allCases)
    func closeFromDone(mode: LMDBChangeLog.SyncMode) throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: mode)
            let done = Completions()
            log.append(.put(KeyValue(key: "a", value: [1], version: 1, createRevision: 1)), revision: 1, done: done.callback(1))
            let record = done.callback(2)
            log.append(.put(KeyValue(key: "b", value: [2], version: 2, createRevision: 2)), revision: 2) { error in
                record(error)
                log.close()  // on the writer thread: must not wait for itself
            }
            #expect(done.wait(seconds: 10))
            #expect(done.errors.isEmpty)
            log.close()  // waits for the teardown the callback started
            let reopened = try LMDBChangeLog(directory: dir.path, sync: mode)
            defer { reopened.close() }
            #expect(try reopened.recover().entries.map(\.key) == ["a", "b"])
        }
    }

    @Test("a log dropped without close() is closed by deinit")
    func deinitCloses() throws {
        try withTempDir { dir in
            let done = Completions()
            do {
                let log = try LMDBChangeLog(directory: dir.path, sync: .batch)
                log.append(.leaseGrant(id: 5, ttlSeconds: 9), revision: 4, done: done.callback(4))
            }
            #expect(done.count == 1)
            let reopened = try LMDBChangeLog(directory: dir.path, sync: .batch)
            defer { reopened.close() }
            let state = try reopened.recover()
            #expect(state.revision == 4)
            #expect(state.leases.map(\.id) == [5])
        }
    }

    @Test("batch mode syncs within about 10 ms of a commit")
    func batchSyncs() throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: .batch)
            defer { log.close() }
            let done = Completions()
            log.append(.leaseGrant(id: 1, ttlSeconds: 1), revision: 1, done: done.callback(1))
            #expect(done.wait())
            let deadline = Date().addingTimeInterval(2)
            while log.stats.syncs == 0 && Date() < deadline { usleep(1000) }
            #expect(log.stats.syncs >= 1)
            #expect(log.stats.commits == 1)
        }
    }
}
