#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import Synchronization
import WeftCore
import WeftSandbox
import WeftTransport
import WeftWire

/// The instances of one deployed version of one function: warm instances are reused, new ones
/// start while every instance is busy (up to `instancesMax`), and beyond that invocations wait
/// in a bounded queue; a full queue answers `overloaded` at once instead of piling up.
final class FunctionPool: @unchecked Sendable {
    struct Limits: Sendable {
        var instancesMax = 8
        var queueMax = 256
    }

    private struct State {
        var instances: [Instance] = []
        var starting = 0
        var queue: [PendingInvocation] = []
        var queueHead = 0
        var nextNumber = 1
        var draining = false
    }

    let tenant: String
    let info: FunctionInfo
    let codeDirectory: String
    let executable: String
    let worker: Worker
    let limits: Limits
    private let state = Mutex(State())
    private let logger: Logger

    init(tenant: String, info: FunctionInfo, codeDirectory: String, executable: String, worker: Worker, limits: Limits, logger: Logger) {
        self.tenant = tenant
        self.info = info
        self.codeDirectory = codeDirectory
        self.executable = executable
        self.worker = worker
        self.limits = limits
        self.logger = logger
    }

    var queueDepth: Int { state.withLock { $0.queue.count - $0.queueHead } }
    var instanceCount: Int { state.withLock { $0.instances.count + $0.starting } }

    /// Runs `p` on an instance: a waiting one now, else queued (starting an instance if allowed).
    func submit(_ p: PendingInvocation) throws(WeftError) {
        // Fast path: a warm instance waiting for work.
        let candidates = state.withLock { s -> [Instance]? in
            s.draining ? nil : s.instances
        }
        guard let candidates else { throw WeftError(.unavailable, "function '\(info.manifest.name)' is being replaced") }
        for inst in candidates where inst.hasWaiter {
            if inst.dispatch(p, deadlineUnixMs: deadlineUnixMs()) { return }
        }
        let (start, listed) = try state.withLock { (s) throws(WeftError) -> (Bool, [Instance]) in
            guard s.queue.count - s.queueHead < limits.queueMax else {
                throw WeftError(.overloaded, "function '\(info.manifest.name)' has \(limits.queueMax) invocations waiting; try again later")
            }
            s.queue.append(p)
            let busy = s.instances.allSatisfy { !$0.hasWaiter }
            if busy && s.instances.count + s.starting < limits.instancesMax && s.starting < s.queue.count - s.queueHead {
                s.starting += 1
                return (true, s.instances)
            }
            return (false, s.instances)
        }
        if start { startInstance() }
        // An instance may have started waiting between the fast path and the queueing; the
        // list is read after the queueing (not the fast path's copy), as one listed meanwhile
        // checks the queue only when it is listed.
        for inst in listed where inst.hasWaiter { instanceWaiting(inst) }
    }

    /// An instance asked for work: give it the oldest queued invocation.
    func instanceWaiting(_ inst: Instance) {
        let next: PendingInvocation? = state.withLock { s in
            guard s.queueHead < s.queue.count else { return nil }
            let p = s.queue[s.queueHead]
            s.queueHead += 1
            if s.queueHead > 64 && s.queueHead * 2 > s.queue.count {
                s.queue.removeFirst(s.queueHead)
                s.queueHead = 0
            }
            return p
        }
        guard let next else { return }
        if !inst.dispatch(next, deadlineUnixMs: deadlineUnixMs()) {
            // It died in between: put it back in front.
            state.withLock { s in
                if s.queueHead > 0 {
                    s.queueHead -= 1
                    s.queue[s.queueHead] = next
                } else {
                    s.queue.insert(next, at: 0)
                }
            }
        }
    }

    /// An instance's process ended. One that ended before ever asking for work (it crashed at
    /// start, or its executable does not speak the protocol) fails the queued invocations when
    /// no other instance is left for them, instead of being restarted in a loop.
    func instanceEnded(_ inst: Instance, startupFailure: (WeftError, String)?) {
        let (restart, failed) = state.withLock { s -> (Bool, [PendingInvocation]) in
            s.instances.removeAll { $0 === inst }
            guard !s.draining, s.queueHead < s.queue.count, s.instances.isEmpty, s.starting == 0 else { return (false, []) }
            if startupFailure != nil {
                let q = Array(s.queue[s.queueHead...])
                s.queue.removeAll()
                s.queueHead = 0
                return (false, q)
            }
            // Queued work and no one left to do it: start a replacement.
            s.starting += 1
            return (true, [])
        }
        if restart { startInstance() }
        if let (error, tail) = startupFailure {
            let now = monotonicNs()
            for p in failed {
                p.complete(InvocationOutcome(output: [], error: error, stderrTail: tail, cold: true, startedNs: p.enqueuedNs, finishedNs: now))
            }
        }
    }

    /// The worker's timeout sweep: queued invocations older than the function's timeout plus
    /// `startupTimeoutMs` fail with `timeout` (and instances that never became ready in that
    /// time are killed); instances running an invocation past the function's timeout are
    /// killed (it fails with `timeout`).
    func expireTimeouts(nowNs: UInt64, startupTimeoutMs: Int) {
        let queueTimeoutMs = info.manifest.timeoutMs + startupTimeoutMs
        let queueTimeoutNs = UInt64(queueTimeoutMs) * 1_000_000
        let (expired, stuck, instances) = state.withLock { s -> ([PendingInvocation], [Instance], [Instance]) in
            // The queue is in submission order: whatever expired is at its front.
            var expired: [PendingInvocation] = []
            while s.queueHead < s.queue.count, nowNs > s.queue[s.queueHead].enqueuedNs + queueTimeoutNs {
                expired.append(s.queue[s.queueHead])
                s.queueHead += 1
            }
            if s.queueHead == s.queue.count {
                s.queue.removeAll(keepingCapacity: true)
                s.queueHead = 0
            }
            let stuck = expired.isEmpty ? [] : s.instances.filter { $0.neverServed && nowNs &- $0.createdNs > queueTimeoutNs }
            return (expired, stuck, s.instances)
        }
        for inst in stuck { inst.kill(WeftError(.timeout, "the instance did not become ready within \(queueTimeoutMs) ms")) }
        for p in expired {
            p.complete(InvocationOutcome(
                output: [], error: WeftError(.timeout, "no instance took the invocation within its timeout of \(queueTimeoutMs) ms"),
                stderrTail: "", cold: true, startedNs: p.enqueuedNs, finishedNs: nowNs))
        }
        let runTimeoutMs = info.manifest.timeoutMs
        for inst in instances where inst.isOverdue(nowNs: nowNs, timeoutNs: UInt64(runTimeoutMs) * 1_000_000) {
            inst.kill(WeftError(.timeout, "the function ran longer than its timeout of \(runTimeoutMs) ms"))
        }
    }

    private func deadlineUnixMs() -> UInt64 {
        UInt64(Worker.unixMs()) + UInt64(info.manifest.timeoutMs)
    }

    // MARK: starting instances

    private func startInstance() {
        let number = state.withLock { s in
            defer { s.nextNumber += 1 }
            return s.nextNumber
        }
        let inst = Instance(number: number, pool: self)
        Task.detached { [self] in
            do {
                try await self.launch(inst)
                let leftover = self.state.withLock { s -> Bool in
                    s.starting -= 1
                    if s.draining { return true }
                    s.instances.append(inst)
                    return false
                }
                if leftover {
                    inst.retire()
                } else if inst.hasWaiter {
                    // It asked for work before it was listed, and work may have been queued
                    // since by a caller that did not see it yet: nobody else would pair them.
                    self.instanceWaiting(inst)
                }
            } catch {
                self.logger.warning("instance failed to start", metadata: ["function": "\(self.info.manifest.name)", "error": "\(error)"])
                // Fail what waits, or the callers would wait for an instance that never comes.
                let failed = self.state.withLock { s -> [PendingInvocation] in
                    s.starting -= 1
                    guard s.instances.isEmpty, s.starting == 0 else { return [] }
                    let q = Array(s.queue[s.queueHead...])
                    s.queue.removeAll()
                    s.queueHead = 0
                    return q
                }
                let now = monotonicNs()
                let e = (error as? WeftError) ?? WeftError(.functionCrashed, "the instance did not start: \(error)")
                for p in failed {
                    p.complete(InvocationOutcome(output: [], error: e, stderrTail: "", cold: true, startedNs: now, finishedNs: now))
                }
            }
        }
    }

    private func launch(_ inst: Instance) async throws {
        guard worker.beginInstanceStart() else { throw WeftError(.unavailable, "the worker is shutting down") }
        defer { worker.endInstanceStart() }
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw WeftError(.unavailable, "socketpair failed: \(String(cString: strerror(errno)))")
        }
        let manifest = info.manifest
        var env = manifest.env.map { "\($0.key)=\($0.value)" }
        env.append("WEFT_FUNCTION_CONCURRENCY=\(manifest.concurrency)")
        env.append("WEFT_FUNCTION=\(manifest.name)")
        if manifest.env["SWIFT_BACKTRACE"] == nil {
            // Swift's crash backtracer is off in instances unless a deploy turns it on
            // (`--env SWIFT_BACKTRACE=enable=yes`): on a loaded machine it held a crashed
            // instance for more than 20 s, and the caller with it, where a crash must fail
            // the invocation at once. The stderr tail and the signal still say what happened.
            env.append("SWIFT_BACKTRACE=enable=no")
        }
        // Memory shared with the instance for large values; without it the socket carries all.
        var arena: SharedArena?
        if worker.options.arenaHalfBytes > 0 {
            do {
                arena = try SharedArena.create(halfBytes: worker.options.arenaHalfBytes)
                env.append("WEFT_ARENA_FD=4")
            } catch {
                logger.warning("instance starts without a shared arena: \(error)")
            }
        }
        var spec = SandboxSpec(executable: executable, codeDirectory: codeDirectory)
        spec.environment += env
        spec.memoryMB = manifest.memoryMB
        spec.network = manifest.network
        spec.hiddenPaths = worker.hiddenPaths
        let process: SandboxedProcess
        do {
            process = try await worker.launcher.start(
                spec, channel: fds[1], arena: arena?.fd, stem: spec.network ? nil : worker.takeStem())
        } catch {
            close(fds[0])
            close(fds[1])
            throw WeftError(.functionCrashed, "the sandbox did not start: \(error)")
        }
        close(fds[1])
        let channel: InstanceChannel
        do {
            channel = try await InstanceChannel.serveConnectedSocket(
                fds[0], store: TenantStore(worker.store, tenant: tenant), functions: inst,
                group: worker.group, logger: logger, limits: worker.serverLimits, arena: arena)
        } catch {
            close(fds[0])
            process.kill()
            throw error
        }
        inst.attach(process: process, channel: channel)
        let worker = self.worker
        worker.instanceStarted(inst)
        Task.detached {
            let result = await process.result()
            inst.processEnded(result)
            worker.instanceEnded(inst)
        }
    }

    // MARK: ending

    /// Stops new work; retires instances once they are idle (a redeploy replaced this version).
    func drain() {
        let instances = state.withLock { s in
            s.draining = true
            return s.instances
        }
        Task.detached {
            for inst in instances {
                while inst.runningCount > 0 && !inst.isDead {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                inst.retire()
            }
        }
    }

    /// Retires instances idle for longer than `keepAliveMs` (scale to zero).
    func reapIdle(keepAliveMs: Int) {
        let now = monotonicNs()
        let idle = state.withLock { s -> [Instance] in
            let old = s.instances.filter { inst in
                guard let since = inst.idleSinceNs else { return false }
                return now > since && now - since > UInt64(keepAliveMs) * 1_000_000
            }
            guard s.queueHead >= s.queue.count else { return [] }
            s.instances.removeAll { i in old.contains { $0 === i } }
            return old
        }
        for inst in idle { inst.retire() }
    }
}
