#if canImport(Glibc)
import Glibc
#endif
import Foundation

extension Process {
    /// Waits until the process has exited and returns its status: the exit code, or 128 + the
    /// signal that ended it; nil when it still runs after `seconds`.
    ///
    /// Unlike `waitUntilExit`, it is bounded and does not depend on Foundation having seen the
    /// child's SIGCHLD: with many children started from several threads Foundation sometimes
    /// misses one, and `waitUntilExit` then spins a core forever on a zombie (seen in the
    /// cluster tests). A zombie counts as exited here, its status read from /proc (the child is
    /// left for Foundation to reap, so its own bookkeeping is never contradicted).
    @discardableResult
    public func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        let pid = processIdentifier
        while true {
            if !isRunning {
                return terminationReason == .uncaughtSignal ? 128 + terminationStatus : terminationStatus
            }
            if let status = Self.zombieStatus(pid) { return Self.exitCode(waitStatus: status) }
            if Date() >= deadline { return nil }
            usleep(5_000)
        }
    }

    /// The exit status once the process has ended by itself within `seconds`, or else after
    /// SIGTERM (and SIGKILL 10 s later).
    public func finish(within seconds: Double) -> Int32 {
        if let status = exitStatus(within: seconds) { return status }
        terminate()
        if let status = exitStatus(within: 10) { return status }
        return killAndWait() ?? -1
    }

    /// `exitStatus(within:)` after SIGKILL: the process is gone when it returns (10 s bound).
    @discardableResult
    public func killAndWait() -> Int32? {
        if isRunning {
            kill(processIdentifier, SIGCONT)
            kill(processIdentifier, SIGKILL)
        }
        return exitStatus(within: 10)
    }

    /// A wait status (waitpid's) as an exit code: the code the process exited with, or 128 +
    /// the signal that ended it.
    public static func exitCode(waitStatus status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// The wait status of `pid` if it is a zombie (exited, not reaped yet): field 52 of
    /// /proc/PID/stat, `exit_code`.
    static func zombieStatus(_ pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After "pid (comm)": field 3 is the state; the fields run to exit_code (52).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.first == "Z", fields.count >= 50, let code = Int32(fields[49]) else { return nil }
        return code
    }
}
