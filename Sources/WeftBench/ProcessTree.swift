import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// CPU time and memory of a process and all its live descendants, read from Linux `/proc`
/// (the bench reads them for `weft up`, whose function instances are its descendants:
/// `weft up` → `weft-launcher` → the sandbox's pid-1 → the function process).
///
/// What is measured, precisely:
/// - `cpuTicks`: over the root and every live descendant, `utime + stime + cutime + cstime`
///   of `/proc/PID/stat` (fields 14–17, clock ticks, all threads of the process). `cutime` /
///   `cstime` hold the CPU of children that exited and were waited for (recursively, for
///   their waited-for children), so a descendant that exits between two samples moves from
///   "live" into its parent's `cutime` and stays counted: the difference of two samples is
///   the CPU the whole tree used in between, to the tick (10 ms at CLK_TCK 100, per process).
///   Not counted: a descendant that exits and is never waited for, and CPU a process's
///   kernel threads or other processes spend on its behalf outside the tree. One sample is
///   one pass over `/proc`, not atomic: a descendant exiting during the pass may be counted
///   twice or missed (the bench's instances live through its windows: keep-alive 600 s).
/// - `rssBytes`: the sum of the resident set (`/proc/PID/statm` field 2 × page size, the
///   same number as `VmRSS`) of the root and its live descendants at the moment of the
///   sample. Pages shared between processes (the Swift runtime libraries every function
///   process maps) are counted once per process, so this over-counts the machine's memory;
///   `pssBytes` (sum of `Pss` in `/proc/PID/smaps_rollup`, shared pages split among their
///   sharers) does not, and is nil when a process's smaps_rollup cannot be read.
public struct ProcessTreeSample: Sendable {
    public var cpuTicks: UInt64 = 0
    public var rootCPUTicks: UInt64 = 0
    public var rssBytes: UInt64 = 0
    public var rootRSSBytes: UInt64 = 0
    public var pssBytes: UInt64? = 0
    /// Live processes in the tree, the root included.
    public var processes = 0
    /// Pids (with their start times, so a reused pid is a different process) of the root's
    /// direct children named `childName` that run a function: their init has a child (a stem,
    /// a launcher waiting for its function, does not count until it gets one).
    public var children: Set<ProcessIdentity> = []

    public struct ProcessIdentity: Hashable, Sendable {
        public var pid: Int32
        public var startTicks: UInt64
    }

    public static var ticksPerSecond: Double { Double(sysconf(Int32(_SC_CLK_TCK))) }

    public static func cpuSeconds(from a: ProcessTreeSample, to b: ProcessTreeSample) -> Double {
        Double(b.cpuTicks &- a.cpuTicks) / ticksPerSecond
    }

    public static func rootCPUSeconds(from a: ProcessTreeSample, to b: ProcessTreeSample) -> Double {
        Double(b.rootCPUTicks &- a.rootCPUTicks) / ticksPerSecond
    }

    struct Stat {
        var ppid: Int32
        var comm: String
        var ticks: UInt64
        var startTicks: UInt64
    }

    /// `/proc/PID/stat`: comm is inside the first '(' and the last ')' (it may hold spaces).
    static func stat(_ pid: Int32) -> Stat? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
            let text = String(data: data, encoding: .utf8),
            let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")")
        else { return nil }
        let comm = String(text[text.index(after: open)..<close])
        // After ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17) ... starttime(22)
        let f = text[text.index(after: close)...].split(separator: " ")
        guard f.count > 19, let ppid = Int32(f[1]) else { return nil }
        let ticks = (11...14).reduce(UInt64(0)) { $0 + UInt64(max(0, Int64(f[$1]) ?? 0)) }
        return Stat(ppid: ppid, comm: comm, ticks: ticks, startTicks: UInt64(f[19]) ?? 0)
    }

    static func rss(_ pid: Int32) -> UInt64 {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/statm"),
            let text = String(data: data, encoding: .utf8)
        else { return 0 }
        let f = text.split(separator: " ")
        guard f.count > 1, let pages = UInt64(f[1]) else { return 0 }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func pss(_ pid: Int32) -> UInt64? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/smaps_rollup"),
            let text = String(data: data, encoding: .utf8)
        else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
    }

    /// Samples `root` and its live descendants (one pass over `/proc`). `memory: false` skips
    /// RSS/PSS (cheaper, for the sample at the start of a window).
    public static func take(root: Int32, childName: String = "weft-launcher", memory: Bool = true) -> ProcessTreeSample {
        var stats: [Int32: Stat] = [:]
        var childrenOf: [Int32: [Int32]] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for name in entries {
            guard let pid = Int32(name), let s = stat(pid) else { continue }
            stats[pid] = s
            childrenOf[s.ppid, default: []].append(pid)
        }
        var sample = ProcessTreeSample()
        guard let rootStat = stats[root] ?? stat(root) else { return sample }
        sample.rootCPUTicks = rootStat.ticks
        var stack: [Int32] = [root]
        while let pid = stack.popLast() {
            guard let s = pid == root ? rootStat : stats[pid] else { continue }
            sample.processes += 1
            sample.cpuTicks += s.ticks
            if memory {
                let r = rss(pid)
                sample.rssBytes += r
                if pid == root { sample.rootRSSBytes = r }
                if let p = pss(pid), let sum = sample.pssBytes { sample.pssBytes = sum + p } else { sample.pssBytes = nil }
            }
            if s.ppid == root && s.comm == childName, (childrenOf[pid] ?? []).contains(where: { childrenOf[$0] != nil }) {
                sample.children.insert(ProcessIdentity(pid: pid, startTicks: s.startTicks))
            }
            stack += childrenOf[pid] ?? []
        }
        if !memory { sample.pssBytes = nil }
        return sample
    }
}
