import Glibc
import WeftSandbox
import WeftTestKit

/// Locates the launcher and the probe in the build directory, and prepares a code dir
/// (a fresh directory under /tmp holding a copy of sandbox-probe).
enum Fixture {
    static let launcher: SandboxLauncher = {
        do { return try SandboxLauncher.locate() } catch { fatalError("\(error) (build the weft-launcher product)") }
    }()

    static let probePath: String = {
        if let env = getenv("SANDBOX_PROBE") { return String(cString: env) }
        let launcherDir = String(launcher.path[..<launcher.path.lastIndex(of: "/")!])
        return launcherDir + "/sandbox-probe"
    }()

    static let codeDir: String = {
        var template = Array("/tmp/weft-sandbox-test.XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            fatalError("mkdtemp: \(errno)")
        }
        let path = String(cString: dir)
        chmod(path, 0o755)   // the function runs as an unprivileged uid
        copyFile(from: probePath, to: path + "/sandbox-probe", mode: 0o755)
        atexit {
            unlink(Fixture.codeDir + "/sandbox-probe")
            rmdir(Fixture.codeDir)
        }
        return path
    }()

    static var isRoot: Bool { geteuid() == 0 }

    static func spec(_ arguments: String..., configure: (inout SandboxSpec) -> Void = { _ in }) -> SandboxSpec {
        var s = SandboxSpec(executable: "./sandbox-probe", arguments: arguments, codeDirectory: codeDir)
        configure(&s)
        return s
    }

    /// Runs the probe to completion (bounded).
    static func run(
        _ arguments: String..., timeout: Duration = .seconds(10), configure: (inout SandboxSpec) -> Void = { _ in }
    ) async throws -> (SandboxReport, SandboxResult) {
        var s = SandboxSpec(executable: "./sandbox-probe", arguments: arguments, codeDirectory: codeDir)
        configure(&s)
        let p = try await launcher.start(s)
        return (p.report, try await wait(p, timeout: timeout))
    }

    /// `p.wait(timeout:)` on a thread of its own: a blocked wait must not hold one of the
    /// threads every async test in the process shares.
    static func wait(_ p: SandboxedProcess, timeout: Duration) async throws -> SandboxResult {
        try await onOwnThread { p.wait(timeout: timeout) }
    }

    private static func copyFile(from: String, to: String, mode: mode_t) {
        let src = open(from, O_RDONLY)
        precondition(src >= 0, "open \(from): \(errno)")
        let dst = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode)
        precondition(dst >= 0, "open \(to): \(errno)")
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { read(src, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            _ = buf.withUnsafeBytes { write(dst, $0.baseAddress, n) }
        }
        fchmod(dst, mode)
        close(src)
        close(dst)
    }

    /// True once pid no longer runs, polled for up to `seconds`: the instance's init ends by its
    /// parent-death signal, a moment after the launcher (later on a loaded machine).
    static func isGone(_ pid: Int32, within seconds: Double) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while !isGone(pid) {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// True when pid no longer runs (gone, or a zombie waiting to be reaped).
    static func isGone(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        let fd = open("/proc/\(pid)/stat", O_RDONLY)
        if fd < 0 { return true }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return true }
        let text = String(decoding: buf[0..<n], as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return false }
        let state = text[text.index(close, offsetBy: 2)]
        return state == "Z" || state == "X"
    }

    static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        if fd < 0 { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func sleepMs(_ ms: Int) async throws { try await Task.sleep(for: .milliseconds(ms)) }
}
