import WeftCore

/// The protections the launcher applied, from its first report line.
public struct SandboxReport: Sendable, Equatable {
    /// The namespaces in the launcher's order.
    public static let namespaceNames = ["user", "pid", "net", "mount", "ipc", "uts"]

    /// Namespace name → "applied" or "skipped: reason".
    public var namespaces: [String: String]
    /// The mount layout, or "skipped: ...".
    public var mounts: String
    /// "v1 PATH (controllers)", "v2 PATH" or "skipped: reason".
    public var cgroup: String
    /// The instance cgroup directories (host paths).
    public var cgroupPaths: [String]
    public var seccomp: String
    public var seccompRules: Int
    public var network: Bool
    public var uid: Int
    public var gid: Int
    /// Host pid of the instance's init process (pid 1 of its pid namespace).
    public var initPID: Int32
    public var setupMilliseconds: Double
    public var warnings: [String]
    /// The report line as received.
    public var raw: String

    public func isApplied(_ namespace: String) -> Bool { namespaces[namespace] == "applied" }
    public var appliedNamespaces: [String] { Self.namespaceNames.filter { isApplied($0) } }
    public var skippedNamespaces: [String: String] { namespaces.filter { $0.value != "applied" } }
    public var hasCgroup: Bool { !cgroup.hasPrefix("skipped") }

    init?(line: String) {
        guard let json = JSONValue.parse(line), let ns = json["namespaces"]?.object else { return nil }
        namespaces = ns.compactMapValues { $0.string }
        mounts = json["mounts"]?.string ?? ""
        cgroup = json["cgroup"]?.string ?? ""
        cgroupPaths = json["cgroupPaths"]?.array?.compactMap { $0.string } ?? []
        seccomp = json["seccomp"]?.string ?? ""
        seccompRules = json["seccompRules"]?.int ?? 0
        network = json["network"]?.bool ?? false
        uid = json["uid"]?.int ?? -1
        gid = json["gid"]?.int ?? -1
        initPID = Int32(json["pid"]?.int ?? -1)
        setupMilliseconds = json["setupMs"]?.double ?? 0
        warnings = json["warnings"]?.array?.compactMap { $0.string } ?? []
        raw = line
    }
}

/// How an instance ended.
public enum SandboxTermination: Sendable, Equatable, CustomStringConvertible {
    /// The function exited with this status.
    case exited(Int32)
    /// The function was killed by this signal (a crash, or a kill from outside).
    case signaled(Int32)
    /// The memory limit was exceeded and the kernel killed the function.
    case oomKilled
    /// The caller's timeout expired and the instance was killed.
    case timedOut
    /// The caller stopped the instance with `kill()`.
    case killed

    public var description: String {
        switch self {
        case .exited(let c): "exited(\(c))"
        case .signaled(let s): "signaled(\(s))"
        case .oomKilled: "oomKilled"
        case .timedOut: "timedOut"
        case .killed: "killed"
        }
    }
}

/// Why an invocation failed, as the worker reports it.
public enum SandboxFailure: Sendable, Equatable, CustomStringConvertible {
    case timeout
    case outOfMemory
    case functionCrashed(stderrTail: String)

    public var description: String {
        switch self {
        case .timeout: "timeout"
        case .outOfMemory: "outOfMemory"
        case .functionCrashed: "functionCrashed"
        }
    }

    /// The failure as the error that reaches the caller (CLI exit status, HTTP status).
    public var weftError: WeftError {
        switch self {
        case .timeout: WeftError(.timeout, "function timed out")
        case .outOfMemory: WeftError(.outOfMemory, "function exceeded its memory limit")
        case .functionCrashed(let tail): WeftError(.functionCrashed, "function crashed: \(tail)")
        }
    }
}

/// The outcome of a sandboxed instance.
public struct SandboxResult: Sendable {
    public var termination: SandboxTermination
    /// The last `outputTailBytes` of stdout / stderr.
    public var stdoutTail: [UInt8]
    public var stderrTail: [UInt8]
    /// Everything the function wrote, counted (most of it discarded).
    public var stdoutBytes: Int
    public var stderrBytes: Int
    /// The launcher's final report line, if it wrote one.
    public var finalReport: String?
    public var memoryPeakBytes: Int?
    public var oomKills: Int?
    /// Times the pids limit refused a fork.
    public var pidsLimitHits: Int?
    /// Why the function could not start (e.g. execve failed), from the launcher.
    public var error: String?
    /// Wait status of the launcher process itself.
    public var launcherStatus: Int32
    public var durationSeconds: Double

    public var stdout: String { String(decoding: stdoutTail, as: UTF8.self) }
    public var stderr: String { String(decoding: stderrTail, as: UTF8.self) }

    /// nil when the function exited 0 or was stopped by the caller.
    public var failure: SandboxFailure? {
        switch termination {
        case .exited(0), .killed: nil
        case .timedOut: .timeout
        case .oomKilled: .outOfMemory
        case .exited, .signaled: .functionCrashed(stderrTail: stderr)
        }
    }
}

public enum SandboxError: Error, Sendable, Equatable, CustomStringConvertible {
    case launcherNotFound(String)
    case spawnFailed(String)
    /// The launcher refused or failed to set up the sandbox (its message, and stderr).
    case setupFailed(String)

    public var description: String {
        switch self {
        case .launcherNotFound(let m): "weft-launcher not found: \(m)"
        case .spawnFailed(let m): "cannot start weft-launcher: \(m)"
        case .setupFailed(let m): "sandbox setup failed: \(m)"
        }
    }
}
