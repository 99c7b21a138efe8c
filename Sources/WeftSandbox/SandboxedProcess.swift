import CLinuxShims
import Glibc

/// A running sandboxed instance (its launcher process).
public final class SandboxedProcess: Sendable {
    /// The launcher's pid (the instance's processes are its descendants).
    public let pid: pid_t
    /// The protections that were applied.
    public let report: SandboxReport
    private let state: MonitorState

    init(pid: pid_t, report: SandboxReport, state: MonitorState) {
        self.pid = pid
        self.report = report
        self.state = state
    }

    /// Stops the instance: SIGTERM to the launcher, which kills the whole instance and
    /// removes its cgroup; SIGKILL after 2 s if the launcher does not end.
    public func kill() {
        state.terminate(.killed)
    }

    public var isRunning: Bool { !state.isFinished }

    /// Blocks until the instance ends; when `timeout` expires first, kills it (`timedOut`).
    public func wait(timeout: Duration? = nil) -> SandboxResult {
        if let timeout {
            if let r = state.waitForExit(deadline: MonitorState.now() + timeout.seconds) { return r }
            state.terminate(.timedOut)
        }
        return state.waitForExit(deadline: nil)!
    }

    /// Suspends until the instance ends; when `timeout` expires first, kills it (`timedOut`).
    public func result(timeout: Duration? = nil) async -> SandboxResult {
        let timer: Task<Void, Never>? = timeout.map { t in
            Task { [state] in
                do {
                    try await Task.sleep(for: t)
                    state.terminate(.timedOut)
                } catch {}
            }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in state.onExit(c) }
        timer?.cancel()
        return state.waitForExit(deadline: nil)!
    }
}

extension Duration {
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) / 1e18
    }
}

/// Output tail: keeps the last `limit` bytes.
struct ByteTail {
    let limit: Int
    var bytes: [UInt8] = []
    var total = 0

    mutating func append(_ chunk: UnsafeRawBufferPointer) {
        total += chunk.count
        guard limit > 0 else { return }
        if chunk.count >= limit {
            bytes = Array(chunk[(chunk.count - limit)...])
            return
        }
        bytes.append(contentsOf: chunk)
        if bytes.count > 2 * limit { bytes.removeFirst(bytes.count - limit) }
    }

    var tail: [UInt8] { bytes.count > limit ? Array(bytes[(bytes.count - limit)...]) : bytes }
}

enum KillReason: Sendable {
    case killed
    case timedOut
}

/// Shared between the monitor thread and callers; every field is guarded by `mutex`.
final class MonitorState: @unchecked Sendable {
    let pid: pid_t
    private let fds: [Int32]   // stdout, stderr, report
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var out: ByteTail
    private var err: ByteTail
    private var reportBuffer: [UInt8] = []
    private var reportLines: [String] = []
    private var launcherStatus: Int32?
    private var finished = false
    private var killReason: KillReason?
    private var killSentAt: Double?
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var reportWaiters: [CheckedContinuation<Void, Never>] = []
    private var result: SandboxResult?
    private var started = MonitorState.now()

    init(pid: pid_t, stdout: Int32, stderr: Int32, report: Int32, tailLimit: Int) {
        self.pid = pid
        self.fds = [stdout, stderr, report]
        self.out = ByteTail(limit: tailLimit)
        self.err = ByteTail(limit: tailLimit)
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    // MARK: callers

    var isFinished: Bool { locked { finished } }

    func terminate(_ reason: KillReason) {
        let send: Bool = locked {
            guard !finished, killReason == nil else { return false }
            killReason = reason
            killSentAt = MonitorState.now()
            return true
        }
        if send { Glibc.kill(pid, SIGTERM) }
    }

    /// Hands a waiting stem its function (see `SandboxStem`); false if the stem is gone.
    func activate(_ message: [UInt8], passing passed: [Int32]) -> Bool {
        guard !isFinished else { return false }
        locked { started = MonitorState.now() }
        var sent = 0
        while sent < message.count {
            let n = message.withUnsafeBytes { m in
                passed.withUnsafeBufferPointer { f in
                    // The fds ride with the first byte only; fds[2] is this end of the report socket.
                    weft_send_with_fds(fds[2], m.baseAddress! + sent, m.count - sent, f.baseAddress, sent == 0 ? Int32(f.count) : 0)
                }
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }

    /// The first report line, or nil if the launcher ended (or the timeout passed) without one.
    func waitForReport(timeout: Duration) -> String? {
        let deadline = MonitorState.now() + timeout.seconds
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while reportLines.isEmpty && !finished {
            if !timedWait(until: deadline) { break }
        }
        return reportLines.first
    }

    /// Resumes `c` once the first report line is in or the launcher has ended.
    func onReportOrExit(_ c: CheckedContinuation<Void, Never>) {
        let ready: Bool = locked {
            if !reportLines.isEmpty || finished { return true }
            reportWaiters.append(c)
            return false
        }
        if ready { c.resume() }
    }

    /// The first report line, if one came in.
    var firstReport: String? { locked { reportLines.first } }

    /// The result, waiting until `deadline` (nil: forever); nil when the deadline passed.
    func waitForExit(deadline: Double?) -> SandboxResult? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !finished {
            if let deadline {
                if !timedWait(until: deadline) { return nil }
            } else {
                pthread_cond_wait(cond, mutex)
            }
        }
        return result
    }

    func onExit(_ c: CheckedContinuation<Void, Never>) {
        let done: Bool = locked {
            if finished { return true }
            waiters.append(c)
            return false
        }
        if done { c.resume() }
    }

    /// With the mutex held. false when the deadline passed.
    private func timedWait(until deadline: Double) -> Bool {
        if MonitorState.now() >= deadline { return false }
        var ts = timespec()
        ts.tv_sec = Int(deadline)
        ts.tv_nsec = Int((deadline - Double(ts.tv_sec)) * 1e9)
        let rc = pthread_cond_timedwait(cond, mutex, &ts)
        return rc != ETIMEDOUT || MonitorState.now() < deadline
    }

    // MARK: the monitor thread

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                let state = Unmanaged<MonitorState>.fromOpaque(raw!).takeRetainedValue()
                state.monitor()
                return nil
            }, context)
        if rc != 0 {
            // No thread: monitor on a best-effort basis in the caller's thread is not possible
            // here; release the reference and fail loudly through the result.
            Unmanaged<MonitorState>.fromOpaque(context).release()
            Glibc.kill(pid, SIGKILL)
            monitor()
            return
        }
        pthread_detach(thread)
    }

    private func monitor() {
        var open = fds
        var reapedAt: Double?
        var escalated = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
        defer { buffer.deallocate() }

        while true {
            var pfds = open.filter { $0 >= 0 }.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if !pfds.isEmpty {
                _ = poll(&pfds, nfds_t(pfds.count), 50)
            } else {
                usleep(20_000)
            }
            for p in pfds where p.revents != 0 {
                let n = read(p.fd, buffer.baseAddress, buffer.count)
                if n > 0 {
                    let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                    locked { consume(fd: p.fd, chunk) }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(p.fd)
                    if let i = open.firstIndex(of: p.fd) { open[i] = -1 }
                }
            }
            let now = MonitorState.now()
            if reapedAt == nil {
                var status: Int32 = 0
                let w = waitpid(pid, &status, WNOHANG)
                if w == pid || (w < 0 && errno == ECHILD) {
                    reapedAt = now
                    locked { launcherStatus = w == pid ? status : -1 }
                } else {
                    let sentAt = locked { killSentAt }
                    if let sentAt, !escalated, now - sentAt > 2 {
                        escalated = true
                        Glibc.kill(pid, SIGKILL)   // the init's parent-death signal ends the instance
                    }
                }
            }
            // After the launcher is gone, drain what is left (bounded: a stray holder of the
            // pipes cannot keep us here).
            if let reapedAt, open.allSatisfy({ $0 < 0 }) || now - reapedAt > 0.25 { break }
        }
        for fd in open where fd >= 0 { close(fd) }

        let finalResult: SandboxResult = locked { makeResult() }
        if finalResult.launcherStatus != -1, (finalResult.launcherStatus & 0x7f) != 0 {
            // The launcher was killed and could not remove its cgroup: try (the next launcher
            // run sweeps leftovers too).
            removeCgroups()
        }
        let toResume: [CheckedContinuation<Void, Never>] = locked {
            result = finalResult
            finished = true
            pthread_cond_broadcast(cond)
            defer {
                waiters = []
                reportWaiters = []
            }
            return waiters + reportWaiters
        }
        for c in toResume { c.resume() }
    }

    /// With the mutex held.
    private func consume(fd: Int32, _ chunk: UnsafeRawBufferPointer) {
        if fd == fds[0] {
            out.append(chunk)
        } else if fd == fds[1] {
            err.append(chunk)
        } else {
            reportBuffer.append(contentsOf: chunk)
            while let nl = reportBuffer.firstIndex(of: 0x0A) {
                reportLines.append(String(decoding: reportBuffer[..<nl], as: UTF8.self))
                reportBuffer.removeSubrange(...nl)
            }
            if reportBuffer.count > 1 << 20 { reportBuffer.removeAll() }
            pthread_cond_broadcast(cond)
            if !reportLines.isEmpty, !reportWaiters.isEmpty {
                // (Resuming only schedules the waiting task; it does not run it here.)
                for c in reportWaiters { c.resume() }
                reportWaiters = []
            }
        }
    }

    private func removeCgroups() {
        let paths: [String] = locked {
            guard let first = reportLines.first, let r = SandboxReport(line: first) else { return [] }
            return r.cgroupPaths
        }
        for path in paths {
            for _ in 0..<100 {
                if rmdir(path) == 0 || errno == ENOENT { break }
                usleep(10_000)
            }
        }
    }

    /// With the mutex held.
    private func makeResult() -> SandboxResult {
        let status = launcherStatus ?? -1
        let final = reportLines.count > 1 ? reportLines.last : nil
        let json = final.flatMap { JSONValue.parse($0) }
        var error = json?["error"]?.string
        if error == nil, reportLines.count == 1, let first = JSONValue.parse(reportLines[0]),
            first["namespaces"] == nil
        {
            error = first["error"]?.string
        }
        let stopped = json?["stopped"] != nil
        var termination: SandboxTermination
        if let exit = json?["exit"], !stopped || killReason == nil {
            if let code = exit["code"]?.int {
                termination = .exited(Int32(code))
            } else if exit["oomKilled"]?.bool == true {
                termination = .oomKilled
            } else {
                termination = .signaled(Int32(exit["signal"]?.int ?? Int(SIGKILL)))
            }
        } else if let killReason {
            termination = killReason == .timedOut ? .timedOut : .killed
        } else if status >= 0, (status & 0x7f) == 0 {
            termination = .exited((status >> 8) & 0xff)
        } else {
            termination = .signaled(status >= 0 ? status & 0x7f : SIGKILL)
        }
        return SandboxResult(
            termination: termination,
            stdoutTail: out.tail, stderrTail: err.tail,
            stdoutBytes: out.total, stderrBytes: err.total,
            finalReport: final,
            memoryPeakBytes: json?["memoryPeakBytes"]?.int,
            oomKills: json?["oomKills"]?.int,
            pidsLimitHits: json?["pidsLimitHits"]?.int,
            error: error,
            launcherStatus: status,
            durationSeconds: MonitorState.now() - started)
    }
}
