import Dispatch
import Foundation
import Synchronization
import WeftCore

/// `.batch` mode's syncer: its own thread calls `mdb_env_sync` at most `interval` after the
/// oldest commit not yet synced, so the writer thread never waits on the disk. (LMDB's
/// `mdb_env_sync` is an `fdatasync` of the data file, safe alongside a write transaction.)
final class BackgroundSyncer: Sendable {
    private struct State {
        /// Uptime (ns) of the oldest commit since the last sync started; nil if all synced.
        var oldestUnsynced: UInt64?
        var idle = false
        var stopping = false
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    private let interval: UInt64
    private let sync: @Sendable () -> Void

    /// `sync` flushes the environment and records failures; it runs on the syncer thread.
    init(intervalNanoseconds: UInt64, sync: @escaping @Sendable () -> Void) {
        self.interval = intervalNanoseconds
        self.sync = sync
        let thread = Thread { [self] in run() }
        thread.name = "weft-lmdb-syncer"
        thread.start()
    }

    /// Called by the writer after each commit.
    func noteCommit() {
        let wakeSyncer = state.withLock { s -> Bool in
            guard s.oldestUnsynced == nil else { return false }
            s.oldestUnsynced = DispatchTime.now().uptimeNanoseconds
            let wasIdle = s.idle
            s.idle = false
            return wasIdle
        }
        if wakeSyncer { wake.signal() }
    }

    /// Syncs what is pending, then stops the thread and waits for it. Call once.
    func stop() {
        state.withLock {
            $0.stopping = true
            $0.idle = false
        }
        wake.signal()
        exited.wait()
    }

    private func run() {
        while true {
            enum Step { case syncAt(UInt64), idle, exit }
            let step = state.withLock { s -> Step in
                if let oldest = s.oldestUnsynced { return .syncAt(s.stopping ? 0 : oldest + interval) }
                if s.stopping { return .exit }
                s.idle = true
                return .idle
            }
            switch step {
            case .idle:
                wake.wait()
            case .syncAt(let deadline):
                if DispatchTime.now().uptimeNanoseconds < deadline {
                    // Only `stop` signals while we are not idle: it makes us sync at once.
                    _ = wake.wait(timeout: DispatchTime(uptimeNanoseconds: deadline))
                }
                // Commits from here on need the next sync; this one covers everything before.
                state.withLock { $0.oldestUnsynced = nil }
                sync()
            case .exit:
                exited.signal()
                return
            }
        }
    }
}
