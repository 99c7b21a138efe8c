import Glibc
import Testing
import WeftCore

@testable import WeftSandbox

@Suite("Sandbox", .serialized)
struct SandboxTests {
    @Test("the report lists the applied protections and ok exits 0")
    func reportAndOk() async throws {
        let (report, result) = try await Fixture.run("ok")
        #expect(result.termination == .exited(0))
        #expect(result.stdout == "ok\n")
        #expect(result.failure == nil)
        #expect(Set(report.namespaces.keys) == Set(SandboxReport.namespaceNames))
        #expect(report.seccomp == "applied")
        #expect(report.seccompRules > 40)
        #expect(report.uid == 65534)
        if Fixture.isRoot {
            // As root on this machine: every namespace, and a cgroup.
            #expect(report.appliedNamespaces == SandboxReport.namespaceNames, "\(report.raw)")
            #expect(report.hasCgroup, "\(report.cgroup)")
            #expect(report.mounts.contains("read-only root"))
        }
        for path in report.cgroupPaths {
            #expect(access(path, F_OK) != 0, "cgroup \(path) was not removed")
        }
    }

    @Test("a fork bomb is contained and the host survives")
    func forkBomb() async throws {
        let (_, result) = try await Fixture.run("fork-bomb") { $0.maxProcesses = 32 }
        #expect(result.termination == .exited(0), "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("EAGAIN"))
        #expect(result.durationSeconds < 10)
        let (_, after) = try await Fixture.run("ok")
        #expect(after.termination == .exited(0))
    }

    @Test("a memory hog past its limit is OOM-killed")
    func memoryHog() async throws {
        let (report, result) = try await Fixture.run("hog", "512") { $0.memoryMB = 64 }
        if report.hasCgroup {
            #expect(result.termination == .oomKilled, "\(result.termination) \(result.stdout)")
            #expect(result.failure == .outOfMemory)
            #expect((result.oomKills ?? 0) >= 1)
        } else {
            // Without a cgroup RLIMIT_AS stops it: a clear allocation failure.
            #expect(result.termination == .exited(3))
            #expect(result.stdout.contains("malloc failed"))
        }
    }

    @Test("an infinite loop is killed at the caller's timeout")
    func spinTimeout() async throws {
        let p = try Fixture.launcher.spawn(Fixture.spec("spin"))
        let result = try await Fixture.wait(p, timeout: .seconds(1))
        #expect(result.termination == .timedOut)
        #expect(result.failure == .timeout)
        #expect(result.failure?.weftError.code == .timeout)
        #expect(result.durationSeconds < 5)
        #expect(try await Fixture.isGone(p.report.initPID, within: 5))
    }

    @Test("ptrace, mount, umount, unshare, setns, bpf, keyctl, clone(NEWUSER), io_uring are denied")
    func deniedSyscalls() async throws {
        for name in ["ptrace", "mount", "umount", "unshare", "setns", "bpf", "keyctl", "clone-newuser", "io-uring"] {
            let (_, result) = try await Fixture.run(name)
            #expect(result.stdout == "\(name): EPERM\n", "\(name): \(result.stdout) \(result.stderr)")
            #expect(result.termination == .exited(1), "\(name)")
        }
    }

    @Test("network sockets need the network permission")
    func sockets() async throws {
        let (_, denied) = try await Fixture.run("socket")
        #expect(denied.stdout == "socket: EPERM\n")
        let (_, denied6) = try await Fixture.run("socket6")
        #expect(denied6.stdout == "socket6: EPERM\n")
        let (_, unix) = try await Fixture.run("socket-unix")
        #expect(unix.stdout == "socket-unix: ok\n")
        let (report, allowed) = try await Fixture.run("socket") { $0.network = true }
        #expect(allowed.stdout == "socket: ok\n")
        #expect(report.network)
        #expect(report.namespaces["net"]?.hasPrefix("skipped") == true)
    }

    @Test("only /tmp is writable; the code dir is readable, not writable")
    func filesystem() async throws {
        let name = "weft-sandbox-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let (report, inTmp) = try await Fixture.run("write", "/tmp/\(name)")
        #expect(inTmp.stdout == "write: ok\n")
        if report.isApplied("mount") {
            #expect(access("/tmp/\(name)", F_OK) != 0, "the private /tmp leaked to the host")
        }
        unlink("/tmp/\(name)")

        let (_, readCode) = try await Fixture.run("read", "\(Fixture.codeDir)/sandbox-probe")
        #expect(readCode.stdout == "read: ok\n")

        let (_, etc) = try await Fixture.run("write", "/etc/\(name)")
        #expect(etc.termination != .exited(0))
        // /var/tmp is world-writable and the code dir may belong to the caller: only the
        // read-only root of a mount namespace protects them.
        let (_, outside) = try await Fixture.run("write", "/var/tmp/\(name)")
        let (_, code) = try await Fixture.run("write", "\(Fixture.codeDir)/\(name)")
        if report.isApplied("mount") {
            #expect(outside.stdout == "write: EROFS\n")
            #expect(access("/var/tmp/\(name)", F_OK) != 0)
            #expect(code.stdout == "write: EROFS\n")
            #expect(access("\(Fixture.codeDir)/\(name)", F_OK) != 0)
            #expect(etc.stdout == "write: EROFS\n")
        }
        unlink("/var/tmp/\(name)")
        unlink("\(Fixture.codeDir)/\(name)")
    }

    @Test("a flood of output does not hang the caller; only a bounded tail is kept")
    func flood() async throws {
        let (_, result) = try await Fixture.run("flood", "16", timeout: .seconds(12))
        #expect(result.termination == .exited(0))
        #expect(result.stdoutBytes == 16 << 20)
        #expect(result.stderrBytes >= 16 << 20)
        #expect(result.stdoutTail.count == 64 * 1024)
        #expect(result.stderr.hasSuffix("flood: done\n"))
    }

    @Test("the kept socket is the function's fd 3, and nothing else leaks")
    func channel() async throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        defer { close(pair[0]) }
        let p = try Fixture.launcher.spawn(Fixture.spec("echo-fd3"), channel: pair[1])
        close(pair[1])
        let hello = Array("hello".utf8)
        #expect(write(pair[0], hello, hello.count) == hello.count)
        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { read(pair[0], $0.baseAddress, $0.count) }
        #expect(n > 0 && String(decoding: buf[0..<max(n, 0)], as: UTF8.self) == "echo:hello")
        #expect((try await Fixture.wait(p, timeout: .seconds(5))).termination == .exited(0))

        var pair2: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair2) == 0)
        let fds = try Fixture.launcher.spawn(Fixture.spec("fds"), channel: pair2[1])
        close(pair2[1])
        #expect((try await Fixture.wait(fds, timeout: .seconds(5))).stdout == "fds: 0 1 2 3\n")
        close(pair2[0])
        let (_, noChannel) = try await Fixture.run("fds")
        #expect(noChannel.stdout == "fds: 0 1 2\n")
    }

    @Test("a stem set up ahead runs its function with the function's fds, environment and limits")
    func stemRunsTheFunction() async throws {
        let stem = try Fixture.launcher.prepareStem(SandboxSpec(executable: "", codeDirectory: "/"))
        #expect(stem.isAlive)
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        defer { close(pair[0]) }
        let p = try await Fixture.launcher.start(Fixture.spec("fds") { $0.memoryMB = 64 }, channel: pair[1], stem: stem)
        close(pair[1])
        #expect(p.pid == stem.state.pid, "the stem ran it, not a fresh launcher")
        // The function's limits, not the stem's (128 MB): RLIMIT_AS is 2 × 64 + 256 MiB.
        #expect(p.report.raw.contains("\"asBytes\":\(384 << 20)"), "\(p.report.raw)")
        let result = try await Fixture.wait(p, timeout: .seconds(5))
        #expect(result.stdout == "fds: 0 1 2 3\n")
        for path in p.report.cgroupPaths {
            #expect(access(path, F_OK) != 0, "cgroup \(path) was not removed")
        }

        // The memory limit is the function's too: 64 MB, where the stem was set up with 128.
        let hogStem = try Fixture.launcher.prepareStem(SandboxSpec(executable: "", codeDirectory: "/"))
        let channel = dup(1)
        defer { close(channel) }
        let hog = try await Fixture.launcher.start(Fixture.spec("hog", "512") { $0.memoryMB = 64 }, channel: channel, stem: hogStem)
        #expect(hog.pid == hogStem.state.pid)
        if hog.report.hasCgroup {
            #expect((try await Fixture.wait(hog, timeout: .seconds(20))).termination == .oomKilled)
        } else {
            _ = try await Fixture.wait(hog, timeout: .seconds(20))
        }
    }

    @Test("a stem that does not fit, or has ended, gives way to a fresh start")
    func stemFallback() async throws {
        var template = SandboxSpec(executable: "", codeDirectory: "/")
        template.network = true
        let networked = try Fixture.launcher.prepareStem(template)
        let channel = dup(1)
        defer { close(channel) }
        let p = try await Fixture.launcher.start(Fixture.spec("ok"), channel: channel, stem: networked)
        #expect(p.pid != networked.state.pid)
        #expect((try await Fixture.wait(p, timeout: .seconds(5))).termination == .exited(0))
        // The unfit stem was discarded: it ends (and removes its cgroup) by itself.
        let deadline = ContinuousClock.now + .seconds(5)
        while networked.isAlive && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!networked.isAlive)

        let ended = try Fixture.launcher.prepareStem(SandboxSpec(executable: "", codeDirectory: "/"))
        ended.discard()
        let q = try await Fixture.launcher.start(Fixture.spec("ok"), channel: channel, stem: ended)
        #expect(q.pid != ended.state.pid)
        #expect((try await Fixture.wait(q, timeout: .seconds(5))).termination == .exited(0))
    }

    @Test("exiting mid-protocol closes the channel and reports a crash")
    func exitMidProtocol() async throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        defer { close(pair[0]) }
        let p = try Fixture.launcher.spawn(Fixture.spec("exit", "3"), channel: pair[1])
        close(pair[1])
        var buf = [UInt8](repeating: 0, count: 16)
        var pfd = pollfd(fd: pair[0], events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 5000) == 1)
        let n = buf.withUnsafeMutableBytes { read(pair[0], $0.baseAddress, $0.count) }
        #expect(n == 0, "EOF on the channel")
        let result = try await Fixture.wait(p, timeout: .seconds(5))
        #expect(result.termination == .exited(3))
        #expect(result.failure == .functionCrashed(stderrTail: ""))
    }

    @Test("the function runs as an unprivileged uid with no_new_privs and seccomp")
    func identity() async throws {
        let (_, result) = try await Fixture.run("id")
        #expect(result.termination == .exited(0), "\(result.stdout)")
        #expect(result.stdout.hasPrefix("uid=65534 euid=65534 gid=65534 groups=0 "), "\(result.stdout)")
        #expect(result.stdout.contains("capeff=0000000000000000"))
        #expect(result.stdout.contains("nonewprivs=1"))
        #expect(result.stdout.contains("seccomp=2"))
        let (report, pid) = try await Fixture.run("pid")
        if report.isApplied("pid") { #expect(pid.stdout == "pid=2 ppid=1\n") }
    }

    @Test("rlimits apply, core dumps are off, a crash reports the stderr tail")
    func limitsAndCrash() async throws {
        let (_, limits) = try await Fixture.run("limits") {
            $0.maxOpenFiles = 32
            $0.maxFileSizeMB = 8
        }
        #expect(limits.stdout.contains("nofile=32\n"))
        #expect(limits.stdout.contains("fsize=\(8 << 20)\n"))
        #expect(limits.stdout.contains("core=0\n") || limits.stdout.contains("core=1\n"))
        let (_, crash) = try await Fixture.run("crash")
        #expect(crash.termination == .signaled(SIGSEGV))
        guard case .functionCrashed(let tail) = crash.failure else {
            Issue.record("expected functionCrashed, got \(String(describing: crash.failure))")
            return
        }
        #expect(tail.contains("about to crash"))
        #expect(access("\(Fixture.codeDir)/core", F_OK) != 0)
    }

    @Test("killing the launcher kills the whole instance")
    func launcherKilled() async throws {
        let p = try Fixture.launcher.spawn(Fixture.spec("sleepers", "5"))
        // Until the function has started its five children (a loaded machine takes a while).
        var pids: [Int32] = []
        for _ in 0..<100 {
            pids = [p.report.initPID]
            for path in p.report.cgroupPaths where path.contains("/pids/") || p.report.cgroup.hasPrefix("v2") {
                let listed = Fixture.readText(path + "/cgroup.procs") ?? ""
                pids += listed.split(separator: "\n").compactMap { Int32($0) }
            }
            if !p.report.hasCgroup || pids.count >= 7 { break }
            try await Fixture.sleepMs(50)
        }
        #expect(kill(p.pid, SIGKILL) == 0)
        _ = try await Fixture.wait(p, timeout: .seconds(5))
        var left: [Int32] = []
        for _ in 0..<100 {
            left = pids.filter { !Fixture.isGone($0) }
            if left.isEmpty { break }
            try await Fixture.sleepMs(20)
        }
        #expect(left.isEmpty, "still running: \(left)")
        if p.report.hasCgroup { #expect(pids.count >= 7, "init, the function and 5 children: \(pids)") }
    }

    @Test("kill() stops the instance and removes its cgroup")
    func killAPI() async throws {
        let p = try Fixture.launcher.spawn(Fixture.spec("spin"))
        #expect(p.isRunning)
        p.kill()
        let result = try await Fixture.wait(p, timeout: .seconds(5))
        #expect(result.termination == .killed)
        #expect(result.failure == nil)
        #expect(try await Fixture.isGone(p.report.initPID, within: 5))
        for path in p.report.cgroupPaths { #expect(access(path, F_OK) != 0) }
    }

    @Test("the async API waits and enforces its timeout")
    func asyncResult() async throws {
        let ok = try Fixture.launcher.spawn(Fixture.spec("ok"))
        #expect(await ok.result(timeout: .seconds(5)).termination == .exited(0))
        let spin = try Fixture.launcher.spawn(Fixture.spec("spin"))
        #expect(await spin.result(timeout: .milliseconds(500)).termination == .timedOut)
    }

    @Test("fallback without a user namespace or cgroup is reported")
    func fallback() async throws {
        let (report, result) = try await Fixture.run("id") {
            $0.userNamespace = false
            $0.cgroup = false
        }
        #expect(result.termination == .exited(0), "\(result.stdout) \(result.stderr)")
        #expect(report.namespaces["user"]?.hasPrefix("skipped") == true)
        #expect(!report.hasCgroup)
        #expect(report.warnings.contains { $0.contains("no cgroup") })
        if Fixture.isRoot { #expect(result.stdout.hasPrefix("uid=65534 ")) }
    }

    @Test("a missing executable is reported, not hidden")
    func missingExecutable() async throws {
        var s = Fixture.spec()
        s.executable = "./does-not-exist"
        let result = try Fixture.launcher.run(s, timeout: .seconds(5))
        #expect(result.termination == .exited(127))
        #expect(result.error?.contains("execve ./does-not-exist") == true, "\(String(describing: result.error))")

        var bad = Fixture.spec("ok")
        bad.codeDirectory = "relative/path"
        #expect(throws: SandboxError.self) { try Fixture.launcher.spawn(bad) }
    }

    @Test("a normal function still works after all hostile ones")
    func normalAfterHostile() async throws {
        _ = try await Fixture.run("fork-bomb") { $0.maxProcesses = 16 }
        _ = try await Fixture.run("hog", "256") { $0.memoryMB = 32 }
        _ = try await Fixture.run("spin", timeout: .milliseconds(300))
        _ = try await Fixture.run("flood", "4")
        _ = try await Fixture.run("ptrace")
        _ = try await Fixture.run("crash")
        let (_, result) = try await Fixture.run("ok")
        #expect(result.termination == .exited(0))
        #expect(result.stdout == "ok\n")
    }
}

@Suite("Sandbox pieces")
struct SandboxPieceTests {
    @Test func launcherArguments() {
        var s = SandboxSpec(executable: "/bin/fn", arguments: ["a"], codeDirectory: "/code")
        s.network = true
        s.hiddenPaths = ["/var/lib/weft"]
        let a = s.launcherArguments(keepFD: 3, reportFD: 4)
        #expect(a.suffix(3) == ["--", "/bin/fn", "a"])
        #expect(a.contains("--network"))
        #expect(a.contains("/var/lib/weft"))
        #expect(a.firstIndex(of: "--keep-fd").map { a[$0 + 1] } == "3")
    }

    @Test func json() {
        let v = JSONValue.parse(#"{"a":[1,2.5,"x\"y\u00e9"],"b":{"c":true,"d":null}}"#)
        #expect(v?["a"]?.array?.count == 3)
        #expect(v?["a"]?.array?[2].string == "x\"yé")
        #expect(v?["b"]?["c"]?.bool == true)
        #expect(JSONValue.parse("{") == nil)
        #expect(JSONValue.parse(#"{"exit":{"code":0}} x"#) == nil)
    }

    @Test func tail() {
        var t = ByteTail(limit: 4)
        for chunk in ["ab", "cdef", "g"] { chunk.utf8CString.dropLast().withUnsafeBytes { t.append($0) } }
        #expect(t.tail == Array("defg".utf8))
        #expect(t.total == 7)
    }
}
