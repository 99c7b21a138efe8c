import Glibc

/// Spawns `weft-launcher` for sandboxed function instances.
///
/// The launcher is started with posix_spawn (safe in a multi-threaded process): stdin is
/// /dev/null, stdout and stderr are socket pairs drained by a monitor thread (only a bounded tail
/// is kept), the optional channel (the worker's end of a socketpair) becomes fd 3 of the
/// function, the optional arena (a shared-memory fd) becomes fd 4 of the function, and the
/// report socket is the launcher's fd 4. When the worker dies, the report socket closes and the
/// launcher tears the instance down.
public struct SandboxLauncher: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Finds the launcher: `explicit`, then $WEFT_LAUNCHER, then `weft-launcher` next to the
    /// running executable or in one of its parent directories.
    public static func locate(explicit: String? = nil) throws -> SandboxLauncher {
        if let explicit {
            guard access(explicit, X_OK) == 0 else { throw SandboxError.launcherNotFound("\(explicit) is not executable") }
            return SandboxLauncher(path: explicit)
        }
        if let env = getenv("WEFT_LAUNCHER") {
            let p = String(cString: env)
            guard access(p, X_OK) == 0 else { throw SandboxError.launcherNotFound("WEFT_LAUNCHER=\(p) is not executable") }
            return SandboxLauncher(path: p)
        }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, Int(PATH_MAX))
        guard n > 0 else { throw SandboxError.launcherNotFound("cannot read /proc/self/exe") }
        var dir = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        while let slash = dir.lastIndex(of: "/") {
            dir = String(dir[..<slash])
            let candidate = (dir.isEmpty ? "" : dir) + "/weft-launcher"
            if access(candidate, X_OK) == 0 { return SandboxLauncher(path: candidate) }
            if dir.isEmpty { break }
        }
        throw SandboxError.launcherNotFound("not next to the executable; set WEFT_LAUNCHER")
    }

    /// Starts an instance and returns once the launcher reported the applied protections
    /// (or throws when the sandbox could not be set up). `channel` is passed to the function
    /// as fd 3 and `arena` as fd 4; the caller keeps (and closes) its own descriptors. Blocks the calling thread
    /// until the report: async callers use `start`.
    public func spawn(_ spec: SandboxSpec, channel: Int32? = nil, arena: Int32? = nil, startupTimeout: Duration = .seconds(10)) throws
        -> SandboxedProcess
    {
        let state = try launch(spec, channel: channel, arena: arena)
        guard let line = state.waitForReport(timeout: startupTimeout) else {
            state.terminate(.killed)
            throw SandboxError.setupFailed(Self.startupFailure(state.waitForExit(deadline: nil)!))
        }
        return try Self.started(state, report: line)
    }

    /// `spawn` for async callers: the wait for the launcher's report suspends the caller
    /// instead of blocking its thread (a cold start must not hold one of the few threads
    /// every task of the worker runs on).
    ///
    /// With a `stem` that fits `spec` (`SandboxSpec.stemFits`), the stem runs the function: its
    /// cgroup and namespaces are already set up, which takes most of a start's time. A stem
    /// that does not fit, or has ended, is discarded and the instance started afresh.
    public func start(
        _ spec: SandboxSpec, channel: Int32? = nil, arena: Int32? = nil, stem: SandboxStem? = nil, startupTimeout: Duration = .seconds(10)
    ) async throws -> SandboxedProcess {
        if let stem {
            if stem.template.stemFits(spec), let channel {
                do {
                    return try await finishStart(stem.activate(spec, fds: [channel] + (arena.map { [$0] } ?? [])), startupTimeout: startupTimeout)
                } catch {
                    // A stem that failed (it ended while waiting, or refused the function):
                    // start afresh below.
                }
            } else {
                stem.discard()
            }
        }
        return try await finishStart(try launch(spec, channel: channel, arena: arena), startupTimeout: startupTimeout)
    }

    /// Sets up a sandbox for functions like `template` (network, identity, cgroup controllers)
    /// before any is known: hand it to `start` to run one. Discard stems that go unused.
    public func prepareStem(_ template: SandboxSpec) throws -> SandboxStem {
        SandboxStem(state: try launch(template, channel: nil, arena: nil, stem: true), template: template)
    }

    private func finishStart(_ state: MonitorState, startupTimeout: Duration) async throws -> SandboxedProcess {
        let timer = Task {
            try await Task.sleep(for: startupTimeout)
            if state.firstReport == nil { state.terminate(.killed) }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in state.onReportOrExit(c) }
        timer.cancel()
        if state.firstReport.flatMap(SandboxReport.init(line:)) == nil {
            // No report, or not a report: end it and wait for the end here, so that what
            // follows finds it over and blocks no thread.
            state.terminate(.killed)
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in state.onExit(c) }
        }
        guard let line = state.firstReport else {
            throw SandboxError.setupFailed(Self.startupFailure(state.waitForExit(deadline: nil)!))
        }
        return try Self.started(state, report: line)
    }

    /// Spawns the launcher and its monitor thread; the report is still to come.
    private func launch(_ spec: SandboxSpec, channel: Int32?, arena: Int32?, stem: Bool = false) throws -> MonitorState {
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1], rep: [Int32] = [-1, -1]
        var cleanup: [Int32] = []
        defer { for fd in cleanup where fd >= 0 { close(fd) } }
        for i in 0..<3 {
            // Socket pairs rather than pipes: they are created close-on-exec atomically (pipe2
            // is not visible from Swift), so no concurrent spawn elsewhere can inherit them.
            var p: [Int32] = [-1, -1]
            let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            guard socketpair(AF_UNIX, type, 0, &p) == 0 else {
                for fd in out + err where fd >= 0 { close(fd) }
                throw SandboxError.spawnFailed("socketpair: \(errnoText())")
            }
            switch i {
            case 0: out = p
            case 1: err = p
            default: rep = p
            }
        }
        // The child's ends, moved to >= 10 so that the dup2 onto 1..4 cannot clobber one another.
        func high(_ fd: Int32) throws -> Int32 {
            let h = fcntl(fd, F_DUPFD_CLOEXEC, 10)
            guard h >= 0 else { throw SandboxError.spawnFailed("fcntl: \(errnoText())") }
            cleanup.append(h)
            return h
        }
        cleanup += [out[1], err[1], rep[1]]
        let outW = try high(out[1]), errW = try high(err[1]), repW = try high(rep[1])
        let chan = try channel.map { try high($0) }
        let shared = try arena.map { try high($0) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outW, 1)
        posix_spawn_file_actions_adddup2(&actions, errW, 2)
        if let chan { posix_spawn_file_actions_adddup2(&actions, chan, 3) }
        posix_spawn_file_actions_adddup2(&actions, repW, 4)
        if let shared { posix_spawn_file_actions_adddup2(&actions, shared, 5) }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setpgroup(&attr, 0)   // terminal signals to the worker do not hit instances
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))

        let args = [path] + (stem
            ? spec.stemArguments(reportFD: 4)
            : spec.launcherArguments(keepFD: channel == nil ? nil : 3, reportFD: 4, arenaFD: arena == nil ? nil : 5))
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        // A stem's function gets its environment with the activation.
        var envp: [UnsafeMutablePointer<CChar>?] = (stem ? [] : spec.environment).map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, &argv, &envp)
        // The child's ends must be closed now: the monitor sees EOF only once the launcher
        // (and everything it started) is gone.
        for fd in cleanup where fd >= 0 { close(fd) }
        cleanup = []
        guard rc == 0 else {
            for fd in [out[0], err[0], rep[0]] { close(fd) }
            throw SandboxError.spawnFailed("posix_spawn \(path): \(String(cString: strerror(rc)))")
        }

        // Parent: keep the read ends only.
        let state = MonitorState(
            pid: pid, stdout: out[0], stderr: err[0], report: rep[0], tailLimit: max(0, spec.outputTailBytes))
        state.start()
        return state
    }

    /// The process for a launcher that reported `line`; throws (after ending it) when the line
    /// is not a report.
    private static func started(_ state: MonitorState, report line: String) throws -> SandboxedProcess {
        guard let report = SandboxReport(line: line) else {
            state.terminate(.killed)
            let result = state.waitForExit(deadline: nil)!
            let message = JSONValue.parse(line)?["error"]?.string ?? "unexpected report: \(line)"
            throw SandboxError.setupFailed(message + Self.stderrSuffix(result))
        }
        return SandboxedProcess(pid: state.pid, report: report, state: state)
    }

    /// Spawns, waits for the end (killing the instance when `timeout` expires), returns the result.
    public func run(_ spec: SandboxSpec, channel: Int32? = nil, timeout: Duration? = nil) throws -> SandboxResult {
        try spawn(spec, channel: channel).wait(timeout: timeout)
    }

    private static func stderrSuffix(_ r: SandboxResult) -> String {
        let tail = r.stderr.split(separator: "\n").suffix(5).joined(separator: "\n")
        return tail.isEmpty ? "" : " (stderr: \(tail))"
    }

    private static func startupFailure(_ r: SandboxResult) -> String {
        if let e = r.error { return e + stderrSuffix(r) }
        return "launcher ended before reporting (status \(r.launcherStatus))" + stderrSuffix(r)
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// A sandbox set up ahead of its function (see `SandboxLauncher.prepareStem`): a waiting
/// `weft-launcher --stem` whose instance cgroup and namespaces exist, its init inside them.
public final class SandboxStem: Sendable {
    let state: MonitorState
    /// What it was set up for.
    public let template: SandboxSpec

    init(state: MonitorState, template: SandboxSpec) {
        self.state = state
        self.template = template
    }

    /// False once it has ended (it was discarded, or failed while waiting).
    public var isAlive: Bool { !state.isFinished }

    /// Ends it (and removes its cgroup).
    public func discard() {
        state.terminate(.killed)
    }

    /// Sends the launcher `spec`'s function, environment and `fds` (channel, arena).
    func activate(_ spec: SandboxSpec, fds: [Int32]) throws -> MonitorState {
        var payload: [UInt8] = []
        for a in ["weft-launcher"] + spec.launcherArguments(keepFD: nil, reportFD: nil) { payload += Array(a.utf8) + [0] }
        payload.append(0)
        for e in spec.environment { payload += Array(e.utf8) + [0] }
        var count = UInt32(payload.count).littleEndian
        let message = withUnsafeBytes(of: &count) { Array($0) } + payload
        guard state.activate(message, passing: fds) else {
            throw SandboxError.setupFailed("the stem ended before its function arrived")
        }
        return state
    }
}
