import Foundation
import Glibc
import Logging
import NIOPosix
import Synchronization
import Testing
import WeftCore
import WeftTransport
import WeftTestKit
import WeftWire
@testable import WeftFunction

/// A worker for tests: queues invocations for the instance on the other end of a socketpair,
/// collects their results, answers `invoke` with `invokeBody`, and records what it saw.
final class TestWorker: FunctionRequestHandler, Sendable {
    private struct State {
        var queued: [FunctionInvocation] = []
        var waiters: [@Sendable (Result<FunctionInvocation, WeftError>) -> Void] = []
        var results: [String: CheckedContinuation<([UInt8], WeftError?), Never>] = [:]
        var invokes: [(String, [UInt8])] = []
        var closedCount = 0
        var nextID = 0
    }

    private let state = Mutex(State())
    let invokeBody: @Sendable (String, [UInt8]) async -> Result<[UInt8], WeftError>

    init(invokeBody: @escaping @Sendable (String, [UInt8]) async -> Result<[UInt8], WeftError> = { _, _ in .success([]) }) {
        self.invokeBody = invokeBody
    }

    var invokes: [(String, [UInt8])] { state.withLock { $0.invokes } }
    var closedCount: Int { state.withLock { $0.closedCount } }

    /// Runs one invocation on the instance and waits for its outcome.
    func run(_ function: String, _ input: [UInt8]) async -> ([UInt8], WeftError?) {
        await withCheckedContinuation { continuation in
            let (waiter, invocation) = state.withLock { s -> ((@Sendable (Result<FunctionInvocation, WeftError>) -> Void)?, FunctionInvocation) in
                s.nextID += 1
                let inv = FunctionInvocation(
                    invocationID: "inv-\(s.nextID)", function: function, version: 1,
                    deadlineUnixMs: UInt64(FunctionContext.nowUnixMs() + 10_000), input: input)
                s.results[inv.invocationID] = continuation
                if s.waiters.isEmpty {
                    s.queued.append(inv)
                    return (nil, inv)
                }
                return (s.waiters.removeFirst(), inv)
            }
            waiter?(.success(invocation))
        }
    }

    /// Tells every waiting loop to stop (as a worker does when it drains an instance).
    func drain() {
        let waiters = state.withLock { s in
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for w in waiters { w(.failure(WeftError(.cancelled, "drained"))) }
    }

    /// How many runtime loops are waiting for work.
    var waiting: Int { state.withLock { $0.waiters.count } }

    // MARK: FunctionRequestHandler

    func next(completion: @escaping @Sendable (Result<FunctionInvocation, WeftError>) -> Void) {
        let ready = state.withLock { s -> FunctionInvocation? in
            if s.queued.isEmpty {
                s.waiters.append(completion)
                return nil
            }
            return s.queued.removeFirst()
        }
        if let ready { completion(.success(ready)) }
    }

    func result(invocationID: String, output: [UInt8], error: WeftError?) {
        state.withLock { $0.results.removeValue(forKey: invocationID) }?.resume(returning: (output, error))
    }

    func invoke(function: String, input: [UInt8], async: Bool, completion: @escaping @Sendable (Result<(String, [UInt8]), WeftError>) -> Void) {
        let n = state.withLock { s in
            s.invokes.append((function, input))
            return s.invokes.count
        }
        let body = invokeBody
        Task {
            if async {
                completion(.success(("async-\(n)", [])))
                return
            }
            completion(await body(function, input).map { ("sub-\(n)", $0) })
        }
    }

    func closed() {
        state.withLock { $0.closedCount += 1 }
    }
}

/// A connected socketpair with the worker's end served by `InstanceChannel`.
struct Pair {
    let worker: TestWorker
    let store: MemoryStore
    let channel: InstanceChannel
    /// The instance's end.
    let instanceFD: Int32

    static func make(_ worker: TestWorker, store: MemoryStore = MemoryStore()) async throws -> Pair {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw WeftError(.internalError, "socketpair: \(errno)")
        }
        let channel = try await InstanceChannel.serveConnectedSocket(
            fds[0], store: store, functions: worker, group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test.worker"), limits: ServerLimits())
        return Pair(worker: worker, store: store, channel: channel, instanceFD: fds[1])
    }
}

/// Waits until `condition` holds (polling), up to `timeoutMs`.
func eventually(timeoutMs: Int = 30_000, _ condition: () -> Bool) async -> Bool {
    for _ in 0..<(timeoutMs / 10) {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// An example executable next to the test bundle, spawned with `fd` as its fd 3.
struct ChildFunction {
    let pid: pid_t

    static func executable(_ name: String) -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, Int(PATH_MAX))
        var dir = String(decoding: buf[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        while let slash = dir.lastIndex(of: "/") {
            dir = String(dir[..<slash])
            if access(dir + "/" + name, X_OK) == 0 { return dir + "/" + name }
            if dir.isEmpty { break }
        }
        return name
    }

    static func spawn(_ name: String, fd: Int32, environment: [String] = []) throws -> ChildFunction {
        let path = executable(name)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fd, 3)
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
        let env = ["WEFT_LOG_LEVEL=warning", "WEFT_FUNCTION=\(name)"] + environment
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard rc == 0 else { throw WeftError(.internalError, "posix_spawn \(path): \(rc)") }
        return ChildFunction(pid: pid)
    }

    /// The exit status once the child has exited (nil after `timeoutMs`, when it is killed), and
    /// when the exit was seen. Polled on a thread of its own against a clock deadline: on a
    /// loaded machine the shared task threads wake late, and a CI run saw an exit 3.2 s after
    /// the close that way.
    func exit(timeoutMs: Int = 5_000) async -> (status: Int32?, seenAt: ContinuousClock.Instant) {
        let pid = self.pid
        let seen = try? await onOwnThread { () -> (status: Int32?, seenAt: ContinuousClock.Instant) in
            let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
            var status: Int32 = 0
            while ContinuousClock.now < deadline {
                if waitpid(pid, &status, WNOHANG) == pid { return (Process.exitCode(waitStatus: status), ContinuousClock.now) }
                usleep(2_000)
            }
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            return (nil, ContinuousClock.now)
        }
        // The body does not throw: `seen` is never nil.
        return seen ?? (nil, ContinuousClock.now)
    }
}
