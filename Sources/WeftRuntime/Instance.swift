#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import WeftCore
import WeftSandbox
import WeftTransport
import WeftWire

/// What became of one invocation.
struct InvocationOutcome: Sendable {
    var output: [UInt8]
    var error: WeftError?
    var stderrTail: String
    var cold: Bool
    var startedNs: UInt64
    var finishedNs: UInt64
}

/// An invocation waiting for, or running on, an instance.
struct PendingInvocation: Sendable {
    let id: String
    let input: [UInt8]
    let enqueuedNs: UInt64
    let complete: @Sendable (InvocationOutcome) -> Void
}

/// One sandboxed instance of a function version and the worker's end of its channel. The
/// instance's runtime loop asks for work (`next`, a long poll); the pool hands it invocations
/// through those waiting requests; results, chained invokes and the channel's end come back
/// here. Thread-safe (one lock).
final class Instance: FunctionRequestHandler, @unchecked Sendable {
    private struct State {
        var waiting: [@Sendable (Result<FunctionInvocation, WeftError>) -> Void] = []
        var running: [String: (pending: PendingInvocation, startedNs: UInt64, cold: Bool)] = [:]
        var served = 0
        var idleSinceNs: UInt64
        var dead = false
        /// Why the worker killed it, if it did (e.g. timeout): the error its invocations get.
        var killReason: WeftError?
        var process: SandboxedProcess?
        var channel: InstanceChannel?
    }

    /// Stderr kept in an invocation record: enough for a message and the Swift runtime's
    /// crash backtrace that follows it.
    static let stderrTailBytesMax = 32 << 10

    let number: Int
    let pool: FunctionPool
    private let state: Mutex<State>

    init(number: Int, pool: FunctionPool) {
        self.number = number
        self.pool = pool
        state = Mutex(State(idleSinceNs: monotonicNs()))
    }

    func attach(process: SandboxedProcess, channel: InstanceChannel) {
        state.withLock {
            $0.process = process
            $0.channel = channel
        }
    }

    var isDead: Bool { state.withLock { $0.dead } }
    /// Whether an invocation has run longer than `timeoutNs` (since its dispatch).
    func isOverdue(nowNs: UInt64, timeoutNs: UInt64) -> Bool {
        state.withLock { s in !s.dead && s.running.values.contains { nowNs > $0.startedNs && nowNs - $0.startedNs > timeoutNs } }
    }
    var runningCount: Int { state.withLock { $0.running.count } }
    var hasWaiter: Bool { state.withLock { !$0.dead && !$0.waiting.isEmpty } }

    /// Idle (nothing running) since when, or nil while busy.
    /// Started but has not asked for work yet, since when.
    let createdNs = monotonicNs()
    var neverServed: Bool { state.withLock { $0.served == 0 && $0.waiting.isEmpty && !$0.dead } }

    var idleSinceNs: UInt64? {
        state.withLock { $0.running.isEmpty && !$0.dead ? $0.idleSinceNs : nil }
    }

    /// Gives `p` to a waiting runtime loop; false if none is waiting (or the instance died).
    func dispatch(_ p: PendingInvocation, deadlineUnixMs: UInt64) -> Bool {
        let now = monotonicNs()
        let taken: (@Sendable (Result<FunctionInvocation, WeftError>) -> Void)? = state.withLock { s in
            guard !s.dead, !s.waiting.isEmpty else { return nil }
            let w = s.waiting.removeFirst()
            s.running[p.id] = (p, now, s.served == 0)
            s.served += 1
            return w
        }
        guard let taken else { return false }
        let info = pool.info
        taken(.success(FunctionInvocation(
            invocationID: p.id, function: info.manifest.name, version: info.version,
            deadlineUnixMs: deadlineUnixMs, input: p.input)))
        return true
    }

    // MARK: FunctionRequestHandler (called from the channel's event loop)

    func next(completion: @escaping @Sendable (Result<FunctionInvocation, WeftError>) -> Void) {
        let dead = state.withLock { s in
            if !s.dead { s.waiting.append(completion) }
            return s.dead
        }
        if dead {
            completion(.failure(WeftError(.cancelled, "the instance is being stopped")))
            return
        }
        pool.instanceWaiting(self)
    }

    func result(invocationID: String, output: [UInt8], error: WeftError?) {
        let now = monotonicNs()
        let entry = state.withLock { s in
            let e = s.running.removeValue(forKey: invocationID)
            if s.running.isEmpty { s.idleSinceNs = now }
            return e
        }
        guard let entry else { return }
        entry.pending.complete(InvocationOutcome(
            output: output, error: error, stderrTail: "", cold: entry.cold, startedNs: entry.startedNs, finishedNs: now))
    }

    func invoke(function: String, input: [UInt8], async: Bool, completion: @escaping @Sendable (Result<(String, [UInt8]), WeftError>) -> Void) {
        pool.worker.invokeForCaller(tenant: pool.tenant, function: function, input: input, async: async, completion: completion)
    }

    func closed() {
        // The instance closed its end (exited or crashed): the process result says how; make
        // sure it is going away.
        let process = state.withLock { $0.process }
        process?.kill()
    }

    // MARK: ending

    /// Kills the instance; its running invocations fail with `reason`.
    func kill(_ reason: WeftError) {
        let process = state.withLock { s in
            if s.killReason == nil { s.killReason = reason }
            return s.process
        }
        process?.kill()
    }

    /// Stops taking work and asks the instance to exit by closing its channel (the SDK exits
    /// when fd 3 closes); kills it if it is still there after `graceMs`.
    func retire(graceMs: Int = 1_000) {
        let (channel, process, waiting) = state.withLock { s in
            s.dead = true
            let w = s.waiting
            s.waiting.removeAll()
            return (s.channel, s.process, w)
        }
        for w in waiting { w(.failure(WeftError(.cancelled, "the instance is being stopped"))) }
        channel?.close()
        if let process {
            Task.detached {
                try? await Task.sleep(for: .milliseconds(graceMs))
                process.kill()
            }
        }
    }

    /// The process ended: fail what ran on it, with the reason the sandbox reports.
    func processEnded(_ result: SandboxResult) {
        let now = monotonicNs()
        let (running, waiting, killReason, channel) = state.withLock { s in
            s.dead = true
            let r = s.running
            s.running.removeAll()
            let w = s.waiting
            s.waiting.removeAll()
            return (r, w, s.killReason, s.channel)
        }
        channel?.close()
        for w in waiting { w(.failure(WeftError(.cancelled, "the instance ended"))) }
        let tail = String(decoding: result.stderrTail.suffix(Self.stderrTailBytesMax), as: UTF8.self)
        let error: WeftError
        if let killReason {
            error = killReason
        } else if let failure = result.failure {
            error = failure.weftError
        } else {
            error = WeftError(.functionCrashed, "the instance exited (\(result.termination)) while running this invocation")
        }
        for (_, e) in running {
            e.pending.complete(InvocationOutcome(output: [], error: error, stderrTail: tail, cold: e.cold, startedNs: e.startedNs, finishedNs: now))
        }
        let neverReady = state.withLock { $0.served == 0 }
        pool.instanceEnded(self, startupFailure: neverReady && killReason == nil
            ? (WeftError(error.code == .functionCrashed ? .functionCrashed : error.code,
                         "the instance ended before asking for work (\(result.termination))"), tail)
            : nil)
    }
}

func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
