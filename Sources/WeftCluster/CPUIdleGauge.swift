#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// When a chain's head lets its tail answer the puts that ask for it (see `ReplyAt`).
public enum TailReplies: String, Sendable, CaseIterable {
    /// While at least 25% of the machine's CPU is idle (see `CPUIdleGauge`).
    case auto
    case always
    case never
}

/// The share of the machine's CPU time that was idle between the last two samples (from
/// `/proc/stat`; 100 where there is none). A cluster node samples it every 100 ms and admits
/// tail replies (see `ReplyAt`) while enough is idle: a tail's answer saves a put's client a
/// hop of latency but costs the chain a second answer per put, which a saturated machine pays
/// for in throughput (on two cores with 32 writers, ~10% of the R=3 put rate).
final class CPUIdleGauge: Sendable {
    private let last = Mutex<(idle: UInt64, total: UInt64)?>(nil)
    private let percent = Atomic<Int>(100)

    /// Idle percent over the last sampling interval.
    var idlePercent: Int { percent.load(ordering: .relaxed) }

    func sample() {
        guard let now = Self.read() else { return }
        let previous = last.withLock { l in
            defer { l = now }
            return l
        }
        guard let previous, now.total > previous.total, now.idle >= previous.idle else { return }
        let idle = now.idle - previous.idle
        percent.store(Int(idle * 100 / (now.total - previous.total)), ordering: .relaxed)
    }

    /// The first line of /proc/stat: `cpu user nice system idle iowait irq softirq steal ...`
    /// (in clock ticks since boot); idle counts idle and iowait.
    static func read() -> (idle: UInt64, total: UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n", maxSplits: 1).first, line.hasPrefix("cpu ")
        else { return nil }
        let fields = line.split(separator: " ").dropFirst().prefix(8).compactMap { UInt64($0) }
        guard fields.count >= 5 else { return nil }
        return (fields[3] + fields[4], fields.reduce(0, +))
    }
}
