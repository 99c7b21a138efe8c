import CLMDB
import Foundation
import Synchronization
import WeftCore

/// The durable change log on LMDB: every change a store appends is written to an LMDB
/// environment in `directory`, and `recover()` reads the state back at start.
///
/// Appends are group-committed by one writer thread: everything queued is written in one
/// write transaction. With `.always` a change's `done` runs after the transaction is synced to
/// disk; with `.batch` right after the commit (it then survives a crash of the process) and the
/// environment is synced within about 10 ms (so a machine crash loses at most that much;
/// see `SyncMode.batch` for the power-loss caveat).
///
/// One directory may be open once per process at a time (an LMDB rule); a second `init` for
/// it fails. Call `close()` when done (`deinit` closes too).
public final class LMDBChangeLog: ChangeLog, Sendable {
    /// When a change counts as durable.
    public enum SyncMode: String, Sendable, CaseIterable {
        /// `done` runs after the commit is flushed to disk (`mdb_env_sync`): survives a machine crash.
        case always
        /// `done` runs after the commit, which survives a process crash; a background thread
        /// flushes the environment at most ~10 ms after a commit, so a machine crash loses at
        /// most about the last 10 ms. Caveat (LMDB's, for `MDB_NOSYNC`): on a filesystem that
        /// does not keep write order, a power loss may also damage the environment; `init` or
        /// `recover()` then fail with `storageFailure` where LMDB detects it, and the replica
        /// should be rebuilt from its chain.
        case batch
    }

    /// Counters since `init`.
    public struct Stats: Sendable, Equatable {
        /// Committed write transactions.
        public var commits: UInt64 = 0
        /// Changes written in those transactions.
        public var changes: UInt64 = 0
        /// `mdb_env_sync` calls (fsyncs). In `.always` mode each commit also fdatasyncs its
        /// data pages inside `mdb_txn_commit`; those are not counted here.
        public var syncs: UInt64 = 0
        /// Time spent in `mdb_env_sync`, in nanoseconds.
        public var syncNanoseconds: UInt64 = 0
        /// Most changes written in one transaction.
        public var largestBatch: Int = 0
        /// Failed commits or syncs (after the first, the log stops).
        public var failures: UInt64 = 0
        public init() {}
    }

    /// The state directory (as given).
    public let directory: String
    public let syncMode: SyncMode
    /// Most changes accepted but not yet durable; `append` waits when this many are pending.
    public let pendingChangesMax: Int

    private let env: LMDBEnvironment
    private let tables: StateTables
    private let committer: GroupCommitter
    private let closed = Mutex(false)

    /// Opens the change log in `directory`, creating and initialising it if it is missing or
    /// empty. Throws `storageFailure` if the directory cannot be created, is not empty and holds
    /// no Weft state, is not an LMDB environment, is an LMDB environment without Weft's format
    /// record, holds a newer format, or is already open in this process.
    ///
    /// - Parameters:
    ///   - mapSizeBytes: the most the environment may hold (LMDB's map size, virtual memory).
    ///   - pendingChangesMax: the most changes queued or being written at once (backpressure).
    public init(
        directory: String,
        sync: SyncMode,
        mapSizeBytes: Int = 64 << 30,
        pendingChangesMax: Int = 65_536
    ) throws(WeftError) {
        guard pendingChangesMax >= 1 else {
            throw WeftError(.invalidArgument, "pendingChangesMax must be at least 1, not \(pendingChangesMax)")
        }
        guard mapSizeBytes > 0 else {
            throw WeftError(.invalidArgument, "mapSizeBytes must be positive, not \(mapSizeBytes)")
        }
        self.directory = directory
        self.syncMode = sync
        self.pendingChangesMax = pendingChangesMax

        let canonical = try StateDirectory.prepare(directory)
        try StateDirectory.claim(canonical)
        let env: LMDBEnvironment
        let tables: StateTables
        do throws(WeftError) {
            env = try LMDBEnvironment(
                directory: canonical, mapSizeBytes: mapSizeBytes,
                maxDatabases: StateTables.databaseCount + 4, flags: Self.environmentFlags(sync)
            )
            do throws(WeftError) {
                tables = try StateTables.open(in: env)
            } catch {
                env.close()
                throw error
            }
        } catch {
            StateDirectory.release(canonical)
            throw error
        }
        self.env = env
        self.tables = tables
        self.committer = GroupCommitter(env: env, tables: tables, syncMode: sync, capacity: pendingChangesMax)
        committer.start { [env] in
            env.close()
            StateDirectory.release(canonical)
        }
    }

    deinit { close() }

    /// LMDB flags. `MDB_NOTLS`: read transactions are not tied to threads.
    ///
    /// `.batch`: `MDB_NOSYNC | MDB_NOMETASYNC`, commits never touch the disk and the
    /// background syncer calls `mdb_env_sync`. `.always`: `MDB_NOMETASYNC` only, so each
    /// commit fdatasyncs its data pages before writing the meta page, and our
    /// `mdb_env_sync` then flushes the meta page before any `done` runs. With `MDB_NOSYNC`
    /// a power loss between commit and sync could leave a meta page on disk that points at
    /// pages that are not, which damages the environment instead of losing the commit.
    /// Measured here, this costs `.always` no throughput that can be told apart from noise.
    static func environmentFlags(_ mode: SyncMode) -> UInt32 {
        switch mode {
        case .always: UInt32(MDB_NOMETASYNC) | UInt32(MDB_NOTLS)
        case .batch: UInt32(MDB_NOSYNC) | UInt32(MDB_NOMETASYNC) | UInt32(MDB_NOTLS)
        }
    }

    /// Enqueues `change` for the writer thread and returns; `done` runs on the writer thread
    /// once the change is durable (see `SyncMode`) or with the error that prevented it, in append
    /// order. Blocks while `pendingChangesMax` changes are pending. `done` must be quick and must
    /// not wait for other changes of this log. After `close()` (or a failed write) changes
    /// complete with a `storageFailure` error and are not written.
    public func append(_ change: Change, revision: Revision, done: @escaping @Sendable (WeftError?) -> Void) {
        var item = PendingChange(change: change, revision: revision, done: done)
        switch change {
        case .put(let entry) where entry.key.isEmpty:
            item.refused = WeftError(.invalidKey, "key is empty")
        case .delete(key: "", _):
            item.refused = WeftError(.invalidKey, "key is empty")
        default:
            break
        }
        committer.append(item)
    }

    /// Reads back everything durable: all entries (in key byte order), live leases with their
    /// TTLs, and the highest revision ever written (puts, deletes and lease changes alike).
    /// Throws `storageFailure` if a stored record does not decode or the log is closed.
    public func recover() throws(WeftError) -> RecoveredState {
        try closed.withLock { isClosed throws(WeftError) -> RecoveredState in
            guard !isClosed else { throw GroupCommitter.closedError(directory) }
            var state = try env.read { txn throws(WeftError) in try tables.readAll(in: txn) }
            state.revision = state.entries.reduce(state.revision) { max($0, $1.version) }
            return state
        }
    }

    /// Drains pending changes (their `done`s run), syncs, and closes the environment. Later
    /// appends complete with a `storageFailure` error. Idempotent; blocks until done, except
    /// when called from a `done` callback, where it returns at once and the log closes right
    /// after that callback.
    public func close() {
        let first = closed.withLock { isClosed -> Bool in
            defer { isClosed = true }
            return !isClosed
        }
        if first {
            committer.shutdown()
        } else {
            committer.waitUntilStopped()
        }
    }

    /// Counters since `init`.
    public var stats: Stats { committer.stats }
}

/// The state directory on disk, and which ones this process has open.
enum StateDirectory {
    private static let open = Mutex<Set<String>>([])
    /// Entries that may sit in a directory we initialise.
    private static let allowedEntries: Set<String> = ["data.mdb", "lock.mdb", "lost+found"]

    /// Creates `directory` if needed; checks that a directory without `data.mdb` is empty.
    /// Returns its canonical path.
    static func prepare(_ directory: String) throws(WeftError) -> String {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if !fm.fileExists(atPath: directory, isDirectory: &isDirectory) {
            do {
                try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw WeftError(
                    .storageFailure, "cannot create the state directory '\(directory)': \(error.localizedDescription)"
                )
            }
        } else if !isDirectory.boolValue {
            throw WeftError(.storageFailure, "the state directory '\(directory)' exists and is not a directory")
        }
        let entries: [String]
        do {
            entries = try fm.contentsOfDirectory(atPath: directory)
        } catch {
            throw WeftError(.storageFailure, "cannot read the state directory '\(directory)': \(error.localizedDescription)")
        }
        if !entries.contains("data.mdb") {
            let foreign = entries.filter { !allowedEntries.contains($0) }.sorted()
            if !foreign.isEmpty {
                throw WeftError(
                    .storageFailure,
                    "'\(directory)' is not empty and holds no Weft state (found \(foreign.prefix(5).joined(separator: ", "))"
                        + (foreign.count > 5 ? ", …)" : ")")
                )
            }
        }
        guard let resolved = realpath(directory, nil) else {
            throw WeftError(.storageFailure, "cannot resolve the state directory '\(directory)': \(String(cString: strerror(errno)))")
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func claim(_ canonical: String) throws(WeftError) {
        let inserted = open.withLock { $0.insert(canonical).inserted }
        guard inserted else {
            throw WeftError(.storageFailure, "the state directory '\(canonical)' is already open in this process")
        }
    }

    static func release(_ canonical: String) {
        _ = open.withLock { $0.remove(canonical) }
    }
}
