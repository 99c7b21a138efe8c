import CLMDB
import WeftCore

/// An LMDB environment handle with throwing helpers. Thread rules (LMDB's): the handle may be
/// used from any thread; it is opened with `MDB_NOTLS`, so read transactions are not tied to a
/// thread; a write transaction is begun, used and ended on one thread (LMDB serialises writers).
/// `close()` must not race with any transaction: `LMDBChangeLog` guarantees that.
final class LMDBEnvironment: @unchecked Sendable {
    let directory: String
    private var handle: OpaquePointer?

    init(directory: String, mapSizeBytes: Int, maxDatabases: UInt32, flags: UInt32) throws(WeftError) {
        self.directory = directory
        var env: OpaquePointer?
        var rc = mdb_env_create(&env)
        guard rc == 0, let env else {
            throw LMDBEnvironment.error(rc, "cannot create an LMDB environment for '\(directory)'")
        }
        rc = mdb_env_set_mapsize(env, mapSizeBytes)
        if rc == 0 { rc = mdb_env_set_maxdbs(env, maxDatabases) }
        if rc == 0 { rc = mdb_env_open(env, directory, flags, 0o644) }
        if rc != 0 {
            mdb_env_close(env)
            throw LMDBEnvironment.error(rc, "cannot open '\(directory)' as an LMDB environment")
        }
        handle = env
    }

    deinit { close() }

    /// Largest key this LMDB build accepts.
    var maxKeyBytes: Int {
        guard let handle else { return 0 }
        return Int(mdb_env_get_maxkeysize(handle))
    }

    /// Flushes committed transactions to disk (`mdb_env_sync(env, 1)`).
    func sync() throws(WeftError) {
        guard let handle else { throw closedError }
        let rc = mdb_env_sync(handle, 1)
        guard rc == 0 else { throw error(rc, "mdb_env_sync") }
    }

    func close() {
        if let handle {
            mdb_env_close(handle)
            self.handle = nil
        }
    }

    /// Runs `body` in a read-only transaction.
    func read<R>(_ body: (LMDBTransaction) throws(WeftError) -> R) throws(WeftError) -> R {
        try transaction(flags: UInt32(MDB_RDONLY), commit: false, body)
    }

    /// Runs `body` in a write transaction and commits it; aborts it if `body` throws.
    func write<R>(_ body: (LMDBTransaction) throws(WeftError) -> R) throws(WeftError) -> R {
        try transaction(flags: 0, commit: true, body)
    }

    private func transaction<R>(
        flags: UInt32, commit: Bool, _ body: (LMDBTransaction) throws(WeftError) -> R
    ) throws(WeftError) -> R {
        guard let handle else { throw closedError }
        var txn: OpaquePointer?
        let rc = mdb_txn_begin(handle, nil, flags, &txn)
        guard rc == 0, let txn else { throw error(rc, "mdb_txn_begin") }
        let transaction = LMDBTransaction(txn: txn, environment: self)
        let result: R
        do {
            result = try body(transaction)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        if commit {
            let rc = mdb_txn_commit(txn)  // frees txn, also on failure
            guard rc == 0 else { throw error(rc, "mdb_txn_commit") }
        } else {
            mdb_txn_abort(txn)
        }
        return result
    }

    private var closedError: WeftError {
        WeftError(.storageFailure, "the LMDB environment in '\(directory)' is closed")
    }

    func error(_ rc: Int32, _ operation: String) -> WeftError {
        var message = "\(operation) failed in '\(directory)': \(LMDBEnvironment.describe(rc))"
        if rc == MDB_MAP_FULL {
            message += " (the map is full: reopen with a larger mapSizeBytes)"
        }
        return WeftError(.storageFailure, message)
    }

    static func error(_ rc: Int32, _ message: String) -> WeftError {
        WeftError(.storageFailure, "\(message): \(describe(rc))")
    }

    static func describe(_ rc: Int32) -> String {
        guard let text = mdb_strerror(rc) else { return "error \(rc)" }
        return "\(String(cString: text)) (\(rc))"
    }
}

/// A transaction, valid only inside the closure of `LMDBEnvironment.read`/`write`. Buffers it
/// hands out point into the map and are valid only until the next write or the transaction's end.
struct LMDBTransaction {
    let txn: OpaquePointer
    let environment: LMDBEnvironment

    /// Opens a named database. `nil` if it does not exist and `create` is false.
    func openDatabase(_ name: String, create: Bool) throws(WeftError) -> MDB_dbi? {
        var dbi: MDB_dbi = 0
        let rc = mdb_dbi_open(txn, name, create ? UInt32(MDB_CREATE) : 0, &dbi)
        if rc == MDB_NOTFOUND { return nil }
        guard rc == 0 else { throw environment.error(rc, "opening database '\(name)'") }
        return dbi
    }

    /// The unnamed main database, which lists the named ones.
    func mainDatabase() throws(WeftError) -> MDB_dbi {
        var dbi: MDB_dbi = 0
        let rc = mdb_dbi_open(txn, nil, 0, &dbi)
        guard rc == 0 else { throw environment.error(rc, "opening the main database") }
        return dbi
    }

    /// Number of entries in a database.
    func count(_ dbi: MDB_dbi) throws(WeftError) -> Int {
        var stat = MDB_stat()
        let rc = mdb_stat(txn, dbi, &stat)
        guard rc == 0 else { throw environment.error(rc, "mdb_stat") }
        return stat.ms_entries
    }

    /// Calls `body` with the value under `key`, or nil if absent.
    func get<R>(
        _ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws(WeftError) -> R
    ) throws(WeftError) -> R {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_get(txn, dbi, &k, &v)
        if rc == MDB_NOTFOUND { return try body(nil) }
        guard rc == 0 else { throw environment.error(rc, "mdb_get") }
        return try body(v.buffer)
    }

    func put(_ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(WeftError) {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        let rc = mdb_put(txn, dbi, &k, &v, 0)
        guard rc == 0 else { throw environment.error(rc, "mdb_put (\(value.count)-byte value)") }
    }

    /// Puts a value of `size` bytes that `fill` writes in place (MDB_RESERVE: no extra copy).
    func put(
        _ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer, reserving size: Int,
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(WeftError) {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: size, mv_data: nil)
        let rc = mdb_put(txn, dbi, &k, &v, UInt32(MDB_RESERVE))
        guard rc == 0 else { throw environment.error(rc, "mdb_put (\(size)-byte value)") }
        guard v.mv_size == size, let data = v.mv_data else {
            throw WeftError(.storageFailure, "mdb_put with MDB_RESERVE returned no buffer in '\(environment.directory)'")
        }
        fill(UnsafeMutableRawBufferPointer(start: data, count: size))
    }

    /// Deletes `key`; false if it was absent.
    @discardableResult
    func delete(_ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer) throws(WeftError) -> Bool {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let rc = mdb_del(txn, dbi, &k, nil)
        if rc == MDB_NOTFOUND { return false }
        guard rc == 0 else { throw environment.error(rc, "mdb_del") }
        return true
    }

    /// Calls `body` with every (key, value) of a database in key order.
    func forEach(
        _ dbi: MDB_dbi, _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(WeftError) -> Void
    ) throws(WeftError) {
        var cursor: OpaquePointer?
        var rc = mdb_cursor_open(txn, dbi, &cursor)
        guard rc == 0, let cursor else { throw environment.error(rc, "mdb_cursor_open") }
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val()
        var v = MDB_val()
        rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST)
        while rc == 0 {
            try body(k.buffer, v.buffer)
            rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)
        }
        guard rc == MDB_NOTFOUND else { throw environment.error(rc, "mdb_cursor_get") }
    }
}

extension MDB_val {
    /// The bytes an MDB_val points to (empty if LMDB gave no pointer).
    var buffer: UnsafeRawBufferPointer {
        guard let data = mv_data else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: data, count: mv_size)
    }
}
