/// What to run in a sandbox, and with which limits. Maps one-to-one onto the options of
/// `weft-launcher` (see `weft-launcher --help`).
public struct SandboxSpec: Sendable, Equatable {
    /// The function's executable: absolute, or relative to `codeDirectory` (the working
    /// directory of the function). Not looked up in PATH.
    public var executable: String
    public var arguments: [String]
    /// The complete environment of the function ("NAME=value"); nothing is inherited. The
    /// default caps glibc's malloc arenas: each reserves 64 MiB of address space, which a
    /// multi-threaded function would otherwise burn against RLIMIT_AS.
    public var environment: [String]
    /// The function's code: visible read-only at its own path inside the sandbox.
    public var codeDirectory: String

    /// cgroup memory limit; exceeding it kills the instance (`oomKilled`). 0: none.
    public var memoryMB: Int = 128
    /// RLIMIT_AS; nil: derived by the launcher (2 * memory + 256 MiB, 0 when memory is 0).
    /// The cgroup enforces the real memory limit; this only stops runaway reservations
    /// (and is the only memory limit where no cgroup is available).
    public var addressSpaceMB: Int? = nil
    /// CPU quota in percent of one CPU. 0: none.
    public var cpuPercent: Int = 100
    /// cgroup pids.max and RLIMIT_NPROC. 0: none.
    public var maxProcesses: Int = 64
    public var maxOpenFiles: Int = 64
    public var maxFileSizeMB: Int = 64
    /// Size of the private writable /tmp.
    public var tmpMB: Int = 64
    public var uid: UInt32 = 65534
    public var gid: UInt32 = 65534
    /// Allows AF_INET/AF_INET6/AF_NETLINK sockets and keeps the host network namespace.
    public var network: Bool = false
    /// Directories covered by an empty, inaccessible tmpfs (e.g. the worker's data dir).
    public var hiddenPaths: [String] = []
    public var hostname: String? = nil
    /// cgroup parent, relative to the worker's own cgroup (absolute when starting with "/").
    public var cgroupParent: String = "weft"
    /// Set to false to skip the user namespace (mainly to test the fallback paths).
    public var userNamespace: Bool = true
    /// Set to false to skip the cgroup (mainly to test the fallback paths).
    public var cgroup: Bool = true
    /// How much of the end of stdout and of stderr is kept (each); the rest is discarded.
    public var outputTailBytes: Int = 64 * 1024

    public init(
        executable: String,
        arguments: [String] = [],
        codeDirectory: String,
        environment: [String] = ["PATH=/usr/local/bin:/usr/bin:/bin", "MALLOC_ARENA_MAX=2"]
    ) {
        self.executable = executable
        self.arguments = arguments
        self.codeDirectory = codeDirectory
        self.environment = environment
    }

    /// A stem's command line: everything fixed before the function is known, `--stem` and the
    /// report fd (the rest comes with the activation: `launcherArguments(keepFD: nil, reportFD: nil)`).
    public func stemArguments(reportFD: Int32) -> [String] {
        var a = launcherArguments(keepFD: nil, reportFD: reportFD)
        if let dash = a.firstIndex(of: "--") { a.removeSubrange(dash...) }
        return ["--stem"] + a
    }

    /// Whether a stem set up for `self` can run `other` (the same network, identity and cgroup
    /// controllers: the launcher checks it too).
    public func stemFits(_ other: SandboxSpec) -> Bool {
        network == other.network && uid == other.uid && gid == other.gid && userNamespace == other.userNamespace
            && cgroup == other.cgroup && cgroupParent == other.cgroupParent
            && (memoryMB > 0) == (other.memoryMB > 0) && (cpuPercent > 0) == (other.cpuPercent > 0)
            && (maxProcesses > 0) == (other.maxProcesses > 0)
    }

    /// The launcher's command line (without the launcher path itself).
    public func launcherArguments(keepFD: Int32?, reportFD: Int32?, arenaFD: Int32? = nil) -> [String] {
        var a: [String] = [
            "--memory-mb", String(memoryMB),
            "--cpu-percent", String(cpuPercent),
            "--pids", String(maxProcesses),
            "--nofile", String(maxOpenFiles),
            "--fsize-mb", String(maxFileSizeMB),
            "--tmp-mb", String(tmpMB),
            "--uid", String(uid),
            "--gid", String(gid),
            "--code", codeDirectory,
            "--cgroup-parent", cgroupParent,
        ]
        if let addressSpaceMB { a += ["--as-mb", String(addressSpaceMB)] }
        if network { a.append("--network") }
        if !userNamespace { a.append("--no-userns") }
        if !cgroup { a.append("--no-cgroup") }
        if let hostname { a += ["--hostname", hostname] }
        for path in hiddenPaths { a += ["--hide", path] }
        if let keepFD { a += ["--keep-fd", String(keepFD)] }
        if let reportFD { a += ["--report-fd", String(reportFD)] }
        if let arenaFD { a += ["--arena-fd", String(arenaFD)] }
        a.append("--")
        a.append(executable)
        a += arguments
        return a
    }
}
