import Dispatch
import Foundation
import Synchronization
import Testing
import WeftTestSupport
import WeftCore
import WeftStorage

/// Not pass/fail tests: they print throughput of 4 KiB puts appended from 8 threads.
@Suite("LMDBChangeLog throughput", .serialized, .ownThread)
struct LMDBChangeLogThroughput {
    static let threads = 8
    static let value = [UInt8](repeating: 0xAB, count: 4096)

    /// Appends `perThread` puts from each of `threads` threads; with `waitEach` a thread waits
    /// for each `done` before its next append (like clients waiting for replies).
    static func run(_ log: LMDBChangeLog, prefix: String, perThread: Int, waitEach: Bool) -> (seconds: Double, errors: Int) {
        let revision = Atomic<UInt64>(0)
        let done = Completions()
        let start = ContinuousClock.now
        onThreads(threads) { t in
            let acked = DispatchSemaphore(value: 0)
            for i in 0..<perThread {
                let rev = revision.wrappingAdd(1, ordering: .relaxed).newValue
                let entry = KeyValue(key: "\(prefix)/t\(t)/\(i)", value: value, version: rev, createRevision: rev)
                let record = done.callback(rev)
                log.append(.put(entry), revision: rev) { error in
                    record(error)
                    if waitEach { acked.signal() }
                }
                if waitEach { acked.wait() }
            }
        }
        _ = done.wait(seconds: 600)
        let elapsed = ContinuousClock.now - start
        return (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, done.errors.count)
    }

    static func report(_ label: String, _ mode: LMDBChangeLog.SyncMode, total: Int, seconds: Double, before: LMDBChangeLog.Stats, after: LMDBChangeLog.Stats) {
        print(String(
            format: "LMDBChangeLog throughput [%@, %@]: %d × 4 KiB puts from %d threads in %.3f s = %.0f changes/s (%.1f MiB/s); commits %llu, syncs %llu taking %.0f ms",
            mode.rawValue, label, total, threads, seconds, Double(total) / seconds, Double(total) * 4096 / 1_048_576 / seconds,
            after.commits - before.commits, after.syncs - before.syncs,
            Double(after.syncNanoseconds - before.syncNanoseconds) / 1e6
        ))
    }

    @Test("20 000 appends of 4 KiB from 8 threads, without waiting", arguments: [LMDBChangeLog.SyncMode.batch, .always])
    func openLoop(mode: LMDBChangeLog.SyncMode) throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: mode)
            defer { log.close() }
            // Warm up the allocator and the file with a same-sized run, and let its
            // (background, in `.batch` mode) sync finish before measuring.
            _ = Self.run(log, prefix: "warmup", perThread: 20_000 / Self.threads, waitEach: false)
            Thread.sleep(forTimeInterval: 0.3)
            let before = log.stats
            let total = 20_000
            let result = Self.run(log, prefix: "bench", perThread: total / Self.threads, waitEach: false)
            #expect(result.errors == 0)
            Self.report("open loop", mode, total: total, seconds: result.seconds, before: before, after: log.stats)
        }
    }

    @Test("4 KiB appends from 8 threads, each waiting for its done", arguments: [LMDBChangeLog.SyncMode.batch, .always])
    func closedLoop(mode: LMDBChangeLog.SyncMode) throws {
        try withTempDir { dir in
            let log = try LMDBChangeLog(directory: dir.path, sync: mode)
            defer { log.close() }
            _ = Self.run(log, prefix: "warmup", perThread: 50, waitEach: true)
            Thread.sleep(forTimeInterval: 0.1)
            let before = log.stats
            let total = mode == .batch ? 20_000 : 4_000
            let result = Self.run(log, prefix: "bench", perThread: total / Self.threads, waitEach: true)
            #expect(result.errors == 0)
            Self.report("closed loop", mode, total: total, seconds: result.seconds, before: before, after: log.stats)
        }
    }
}
