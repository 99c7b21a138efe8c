import NIOCore
import Synchronization

/// A system under test. `makeClient()` opens one new connection (or the system's equivalent):
/// the load generator gives every concurrent bench client its own.
public protocol BenchTarget: Sendable {
    /// "weft", "redis" or "etcd": the `system` field of the results.
    var system: String { get }
    /// How the load generator reaches it: "tcp" or "fabric" (the `transport` field of results).
    var transport: String { get }
    /// For a cluster: its replication factor (the `replicas` field of results); nil otherwise.
    var replicas: Int? { get }
    func makeClient() async throws -> any BenchClient
    /// Called by the load generator after each measured step (e.g. etcd compacts its history
    /// there so a long run of large puts stays within its space quota). Default: nothing.
    func afterStep() async throws
}

extension BenchTarget {
    public var transport: String { "tcp" }
    /// For a cluster: its replication factor (the `replicas` field of results).
    public var replicas: Int? { nil }
    public func afterStep() async throws {}
}

/// One connection of a bench client. Requests are issued one at a time (closed loop).
public protocol BenchClient: Sendable {
    /// Reads `key`; returns the value's size in bytes (0 when the key is absent).
    func get(_ key: String) async throws -> Int
    func put(_ key: String, _ value: [UInt8]) async throws
    func close() async
    /// The executor the load generator runs this client's loop on: its connection's event loop
    /// where it has one (for every system alike, so the requests and their answers need no
    /// hand-off between the loop and Swift's pool); nil runs it on the pool.
    var executor: (any TaskExecutor)? { get }
}

extension BenchClient {
    public var executor: (any TaskExecutor)? { nil }
}

/// A target that can also watch a key, for watch-latency measurements.
public protocol WatchableBenchTarget: BenchTarget {
    /// Opens a watcher on its own connection and returns once the watch is established
    /// (every put made after this returns is delivered).
    func makeWatcher(key: String) async throws -> any BenchWatcher
}

/// One change seen by a bench watcher, stamped when it arrived.
public struct WatchNotice: Sendable {
    public var key: String
    /// The new value (may be empty if the system does not deliver values).
    public var value: [UInt8]
    public var revision: UInt64
    /// Monotonic time at which the client received the event (as early as the client can tell).
    public var receivedAt: ContinuousClock.Instant

    public init(key: String, value: [UInt8], revision: UInt64, receivedAt: ContinuousClock.Instant) {
        self.key = key
        self.value = value
        self.revision = revision
        self.receivedAt = receivedAt
    }
}

public protocol BenchWatcher: Sendable {
    /// The next event, waiting at most `timeout`. Throws `BenchError.timeout` after that.
    func next(timeout: Duration) async throws -> WatchNotice
    func close() async
}

public enum BenchError: Error, CustomStringConvertible, Sendable {
    case timeout(String)
    case connectionClosed(String)
    case protocolError(String)
    case serverError(String)
    case verification(String)
    case serverStart(String)

    public var description: String {
        switch self {
        case .timeout(let s): "timeout: \(s)"
        case .connectionClosed(let s): "connection closed: \(s)"
        case .protocolError(let s): "protocol error: \(s)"
        case .serverError(let s): "server error: \(s)"
        case .verification(let s): "verification failed: \(s)"
        case .serverStart(let s): "server start failed: \(s)"
        }
    }
}

/// An unbounded single-consumer queue of watch notices with a timed `next`.
/// Producers (event-loop threads, tasks) `push`/`finish`; one consumer awaits `next`.
final class NoticeQueue: Sendable {
    private struct State {
        var buffer: CircularBuffer<WatchNotice> = .init()
        var waiter: (id: UInt64, cont: CheckedContinuation<WatchNotice, any Error>)?
        var nextWaiterID: UInt64 = 0
        var finished: (any Error)?
    }
    private let state = Mutex(State())

    init() {}

    func push(_ notice: WatchNotice) {
        let cont = state.withLock { s -> CheckedContinuation<WatchNotice, any Error>? in
            if s.finished != nil { return nil }
            if let w = s.waiter {
                s.waiter = nil
                return w.cont
            }
            s.buffer.append(notice)
            return nil
        }
        cont?.resume(returning: notice)
    }

    /// Ends the queue: the pending and every later `next` throw `error` (after buffered notices).
    func finish(_ error: any Error) {
        let cont = state.withLock { s -> CheckedContinuation<WatchNotice, any Error>? in
            if s.finished == nil { s.finished = error }
            let w = s.waiter
            s.waiter = nil
            return w?.cont
        }
        cont?.resume(throwing: error)
    }

    func next(timeout: Duration) async throws -> WatchNotice {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            self?.expire(id, after: timeout)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<WatchNotice, any Error>) in
            enum Action { case value(WatchNotice), error(any Error), wait }
            let action = state.withLock { s -> Action in
                if let n = s.buffer.popFirst() { return .value(n) }
                if let e = s.finished { return .error(e) }
                precondition(s.waiter == nil, "NoticeQueue has a single consumer")
                s.waiter = (id, cont)
                return .wait
            }
            switch action {
            case .value(let n): cont.resume(returning: n)
            case .error(let e): cont.resume(throwing: e)
            case .wait: break
            }
        }
    }

    private func expire(_ id: UInt64, after timeout: Duration) {
        let cont = state.withLock { s -> CheckedContinuation<WatchNotice, any Error>? in
            guard let w = s.waiter, w.id == id else { return nil }
            s.waiter = nil
            return w.cont
        }
        cont?.resume(throwing: BenchError.timeout("no watch event within \(timeout)"))
    }
}

/// Read buffers that grow up to 1 MiB, so large values arrive in few reads (used by the Redis
/// and etcd clients alike).
let largeValueRecvAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 4096, maximum: 1 << 20)

/// Re-stamps a watcher's notices when a task of the consumer receives them, rather than when
/// its channel handler read them. Weft's watch reaches the bench through an async sequence
/// consumed by a task (`WeftBenchWatcher`), so both systems are measured to the same point:
/// "the application's task has the event", one event-loop→task hop after the socket.
final class TaskStampedWatcher: BenchWatcher {
    private let inner: any BenchWatcher
    private let queue = NoticeQueue()
    private let pump: Task<Void, Never>

    init(_ inner: any BenchWatcher) {
        self.inner = inner
        let queue = self.queue
        pump = Task {
            while !Task.isCancelled {
                do {
                    var notice = try await inner.next(timeout: .seconds(3600))
                    notice.receivedAt = ContinuousClock.now
                    queue.push(notice)
                } catch {
                    queue.finish(error)
                    return
                }
            }
        }
    }

    func next(timeout: Duration) async throws -> WatchNotice {
        try await queue.next(timeout: timeout)
    }

    func close() async {
        pump.cancel()
        await inner.close()
    }
}
