import Dispatch
import Foundation
import Synchronization
import WeftCore

/// One appended change waiting for its commit.
struct PendingChange: Sendable {
    var change: Change
    var revision: Revision
    var done: @Sendable (WeftError?) -> Void
    /// Set when the change was refused at `append` (log closed or failed, bad key): it is never
    /// written, only completed with this error, in its place in the append order.
    var refused: WeftError?
}

/// Group commit: `append` enqueues under a mutex; one writer thread takes everything queued,
/// writes it in one LMDB write transaction, commits, syncs according to the mode, and runs the
/// `done`s in append order. At most `capacity` accepted changes are queued or in flight.
///
/// After a failed commit or sync the committer stops writing: that batch's changes complete
/// with the error and every later change with a "stopped" error, so what is durable is always a
/// prefix of what was appended.
final class GroupCommitter: Sendable {
    private struct Queue {
        var pending: [PendingChange] = []
        /// Accepted changes not yet committed (queued + in the batch being written).
        var accepted = 0
        var writerIdle = false
        var writerExited = false
        var roomWaiters = 0
        var closing = false
        var failure: WeftError?
        var writerThread: pthread_t?
    }

    let capacity: Int
    let syncMode: LMDBChangeLog.SyncMode
    let env: LMDBEnvironment
    let tables: StateTables
    /// In `.batch` mode the longest a commit stays unsynced (plus the time of the sync itself).
    static let syncIntervalNanoseconds: UInt64 = 10_000_000

    private let queue = Mutex(Queue())
    private let counters = Mutex(LMDBChangeLog.Stats())
    private let wake = DispatchSemaphore(value: 0)
    private let room = DispatchSemaphore(value: 0)
    /// Left when the writer has torn everything down.
    private let stopped = DispatchGroup()
    /// `.batch` only.
    private let syncer = Mutex<BackgroundSyncer?>(nil)

    init(env: LMDBEnvironment, tables: StateTables, syncMode: LMDBChangeLog.SyncMode, capacity: Int) {
        self.env = env
        self.tables = tables
        self.syncMode = syncMode
        self.capacity = capacity
    }

    var stats: LMDBChangeLog.Stats { counters.withLock { $0 } }

    /// Starts the writer (and in `.batch` mode the syncer). `teardown` runs on the writer
    /// thread at the very end, after the last `done` and the final sync.
    func start(teardown: @escaping @Sendable () -> Void) {
        if syncMode == .batch {
            let syncer = BackgroundSyncer(intervalNanoseconds: Self.syncIntervalNanoseconds) { [self] in sync() }
            self.syncer.withLock { $0 = syncer }
        }
        stopped.enter()
        let thread = Thread { [self] in
            run()
            finish(teardown)
        }
        thread.name = "weft-lmdb-writer"
        thread.start()
    }

    // MARK: appending (any thread)

    func append(_ change: PendingChange) {
        var item = change
        while true {
            enum Outcome { case queued(wakeWriter: Bool), waitForRoom, completeNow(WeftError) }
            let outcome = queue.withLock { q -> Outcome in
                if item.refused == nil {
                    if let failure = q.failure {
                        item.refused = failure
                    } else if q.closing {
                        item.refused = Self.closedError(env.directory)
                    }
                }
                if q.writerExited {
                    return .completeNow(item.refused ?? Self.closedError(env.directory))
                }
                if item.refused == nil {
                    // A `done` that appends runs on the writer: never make it wait for itself.
                    let onWriter = q.writerThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false
                    if q.accepted >= capacity && !onWriter {
                        q.roomWaiters += 1
                        return .waitForRoom
                    }
                    q.accepted += 1
                }
                q.pending.append(item)
                let wakeWriter = q.writerIdle
                q.writerIdle = false
                return .queued(wakeWriter: wakeWriter)
            }
            switch outcome {
            case .queued(let wakeWriter):
                if wakeWriter { wake.signal() }
                return
            case .completeNow(let error):
                item.done(error)
                return
            case .waitForRoom:
                room.wait()
            }
        }
    }

    /// Stops accepting changes; the writer drains the queue (running the `done`s), syncs a last
    /// time and tears down. Waits for all that, except when called on the writer thread (from
    /// a `done`), where waiting would deadlock: then it happens right after that `done`.
    func shutdown() {
        let waiters = queue.withLock { q -> Int in
            q.closing = true
            q.writerIdle = false
            let waiters = q.roomWaiters
            q.roomWaiters = 0
            return waiters
        }
        for _ in 0..<waiters { room.signal() }
        wake.signal()
        waitUntilStopped()
    }

    /// Waits until the writer has torn down (returns at once on the writer thread).
    func waitUntilStopped() {
        let onWriter = queue.withLock { q in q.writerThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
        if !onWriter { stopped.wait() }
    }

    // MARK: the writer thread

    private func run() {
        queue.withLock { $0.writerThread = pthread_self() }
        let syncer = self.syncer.withLock { $0 }
        var highest = tables.revision
        var batch: [PendingChange] = []
        while true {
            enum Step { case work, idle, exit }
            let step = queue.withLock { q -> Step in
                if !q.pending.isEmpty {
                    swap(&q.pending, &batch)
                    q.writerIdle = false
                    return .work
                }
                if q.closing {
                    q.writerExited = true
                    return .exit
                }
                q.writerIdle = true
                return .idle
            }
            switch step {
            case .idle:
                wake.wait()
            case .exit:
                return
            case .work:
                let committed = process(batch, highest: &highest)
                batch.removeAll(keepingCapacity: true)
                if committed { syncer?.noteCommit() }
            }
        }
    }

    private func finish(_ teardown: @Sendable () -> Void) {
        // Taking the syncer out also breaks the committer → syncer → closure → committer cycle.
        syncer.withLock { current -> BackgroundSyncer? in
            defer { current = nil }
            return current
        }?.stop()
        if queue.withLock({ $0.failure }) == nil { sync() }
        teardown()
        stopped.leave()
    }

    /// Writes one batch, completes it, and returns whether a transaction was committed.
    private func process(_ batch: [PendingChange], highest: inout Revision) -> Bool {
        let acceptedCount = batch.reduce(0) { $0 + ($1.refused == nil ? 1 : 0) }
        var error = queue.withLock { $0.failure }
        var committed = false
        if error == nil, acceptedCount > 0 {
            do throws(WeftError) {
                let tables = self.tables
                var newHighest = highest
                try env.write { txn throws(WeftError) in
                    for item in batch where item.refused == nil {
                        newHighest = max(newHighest, try tables.apply(item.change, revision: item.revision, in: txn))
                    }
                    if newHighest > highest { try tables.storeRevision(newHighest, in: txn) }
                }
                highest = newHighest
                committed = true
                counters.withLock {
                    $0.commits += 1
                    $0.changes += UInt64(acceptedCount)
                    $0.largestBatch = max($0.largestBatch, acceptedCount)
                }
                if syncMode == .always { try syncOrThrow() }
            } catch let failure {
                error = failure
                counters.withLock { $0.failures += 1 }
            }
        }
        // Release room before running the `done`s, so appenders need not wait for them.
        let waiters = queue.withLock { q -> Int in
            if let error, q.failure == nil { q.failure = Self.stoppedError(after: error) }
            q.accepted -= acceptedCount
            let waiters = q.roomWaiters
            q.roomWaiters = 0
            return waiters
        }
        for _ in 0..<waiters { room.signal() }
        for item in batch {
            item.done(item.refused ?? error)
        }
        return committed
    }

    /// Syncs for `.batch` mode and at shutdown: a failure stops the log (the changes it covers
    /// were acknowledged already).
    private func sync() {
        do throws(WeftError) {
            try syncOrThrow()
        } catch {
            counters.withLock { $0.failures += 1 }
            queue.withLock { q in
                if q.failure == nil { q.failure = Self.stoppedError(after: error) }
            }
        }
    }

    private func syncOrThrow() throws(WeftError) {
        let start = DispatchTime.now().uptimeNanoseconds
        try env.sync()
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        counters.withLock {
            $0.syncs += 1
            $0.syncNanoseconds += elapsed
        }
    }

    static func closedError(_ directory: String) -> WeftError {
        WeftError(.storageFailure, "the change log in '\(directory)' is closed")
    }

    static func stoppedError(after error: WeftError) -> WeftError {
        WeftError(.storageFailure, "the change log stopped after a failed write: \(error.message)")
    }
}
