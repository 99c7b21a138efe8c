import CLMDB
import Dispatch
import Foundation
import Synchronization
import Testing
import WeftCore
@testable import WeftStorage

/// A fresh directory under the temporary directory, removed by `remove()`.
struct TempDir {
    let url: URL
    var path: String { url.path }

    init(_ name: String = "weft-storage") {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(name)-\(UUID().uuidString)", isDirectory: true)
    }

    func sub(_ name: String) -> String { url.appendingPathComponent(name).path }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Runs `body` with a temp dir path that does not exist yet (its parent does not either).
func withTempDir<R>(_ body: (TempDir) throws -> R) rethrows -> R {
    let dir = TempDir()
    defer { dir.remove() }
    return try body(dir)
}

/// Records `done` results in completion order and lets a test wait for all of them.
final class Completions: Sendable {
    private let results = Mutex<[(tag: UInt64, error: WeftError?)]>([])
    private let group = DispatchGroup()

    func callback(_ tag: UInt64) -> @Sendable (WeftError?) -> Void {
        group.enter()
        return { [self] error in
            results.withLock { $0.append((tag, error)) }
            group.leave()
        }
    }

    /// Waits (at most `seconds`) for every callback handed out; false on timeout.
    func wait(seconds: Double = 60) -> Bool {
        group.wait(timeout: .now() + seconds) == .success
    }

    var tags: [UInt64] { results.withLock { $0.map(\.tag) } }
    var errors: [WeftError] { results.withLock { $0.compactMap(\.error) } }
    var count: Int { results.withLock { $0.count } }
}

/// Runs `body(i)` on `count` threads at once and waits for all.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        let thread = Thread {
            body(i)
            group.leave()
        }
        thread.start()
    }
    group.wait()
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Raw LMDB access for building foreign or damaged environments in tests.
enum RawLMDB {
    /// Opens `path` (created if missing), runs `body` in a write transaction, commits, closes.
    static func write(_ path: String, _ body: (OpaquePointer) throws -> Void) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var env: OpaquePointer?
        try check(mdb_env_create(&env))
        defer { mdb_env_close(env) }
        try check(mdb_env_set_maxdbs(env, 8))
        try check(mdb_env_open(env, path, 0, 0o644))
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, 0, &txn))
        do {
            try body(txn!)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        try check(mdb_txn_commit(txn))
    }

    static func open(_ txn: OpaquePointer, _ name: String?) throws -> MDB_dbi {
        var dbi: MDB_dbi = 0
        try check(mdb_dbi_open(txn, name, UInt32(MDB_CREATE), &dbi))
        return dbi
    }

    static func put(_ txn: OpaquePointer, _ dbi: MDB_dbi, _ key: [UInt8], _ value: [UInt8]) throws {
        var key = key
        var value = value
        try key.withUnsafeMutableBytes { k in
            try value.withUnsafeMutableBytes { v in
                var kv = MDB_val(mv_size: k.count, mv_data: k.baseAddress)
                var vv = MDB_val(mv_size: v.count, mv_data: v.baseAddress)
                try check(mdb_put(txn, dbi, &kv, &vv, 0))
            }
        }
    }

    struct Failure: Error { let rc: Int32 }

    static func check(_ rc: Int32) throws {
        if rc != 0 { throw Failure(rc: rc) }
    }
}

/// `#expect(throws:)` for typed-throwing init: returns the error, or nil if none was thrown.
func openError(_ path: String, sync: LMDBChangeLog.SyncMode = .batch, mapSizeBytes: Int = 64 << 20) -> WeftError? {
    do throws(WeftError) {
        let log = try LMDBChangeLog(directory: path, sync: sync, mapSizeBytes: mapSizeBytes)
        log.close()
        return nil
    } catch {
        return error
    }
}
