import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftClient
import WeftCore

/// One etcd lease kept alive (a keep-alive every third of its TTL) for as long as this node
/// holds what is attached to it: membership keys, leadership. It knows, conservatively, until
/// when the lease is surely valid (see `EtcdLeaseKeeper`) and announces once, through
/// `lost()`, when it is lost: etcd said it expired, or its validity passed without a
/// successful keep-alive. A lost session never recovers: start a new one.
public final class EtcdSession: Sendable {
    public let client: EtcdClient
    /// The lease to attach keys to.
    public let leaseID: Int64
    /// The TTL asked for.
    public let ttlSeconds: Int64
    private let nowMs: @Sendable () -> Int64
    private let logger: Logger

    private struct State {
        var keeper: EtcdLeaseKeeper
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiterID: UInt64 = 0
        var loop: Task<Void, Never>?
        var closed = false
    }
    private let state: Mutex<State>

    private init(client: EtcdClient, leaseID: Int64, ttlSeconds: Int64, keeper: EtcdLeaseKeeper, nowMs: @escaping @Sendable () -> Int64, logger: Logger) {
        self.client = client
        self.leaseID = leaseID
        self.ttlSeconds = ttlSeconds
        self.nowMs = nowMs
        self.logger = logger
        state = Mutex(State(keeper: keeper))
    }

    deinit {
        state.withLock { $0.loop?.cancel() }
    }

    /// Milliseconds on `ContinuousClock` since the first call in this process.
    public static let monotonicNowMs: @Sendable () -> Int64 = {
        let origin = MonotonicOrigin.instant
        let d = ContinuousClock.now - origin
        return d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    /// Grants a lease of `ttlSeconds` and starts keeping it alive. `nowMs` is the monotonic
    /// clock the validity is measured on (injectable for tests; the keep-alive loop sleeps in
    /// real time, so it should advance at real-time rate).
    public static func start(
        client: EtcdClient, ttlSeconds: Int64, logger: Logger = Logger(label: "weft.etcd.session"),
        nowMs: @escaping @Sendable () -> Int64 = monotonicNowMs
    ) async throws(WeftError) -> EtcdSession {
        let sentAtMs = nowMs()
        let leaseID = try await client.leaseGrant(ttlSeconds: ttlSeconds)
        let session = EtcdSession(
            client: client, leaseID: leaseID, ttlSeconds: ttlSeconds,
            keeper: EtcdLeaseKeeper(ttlSeconds: ttlSeconds, grantSentAtMs: sentAtMs), nowMs: nowMs, logger: logger)
        // On an event loop, sleeping on its timers: not on Swift's cooperative pool, whose few
        // threads (two on two cores) CPU-bound work elsewhere in the process may hold for
        // seconds, past a short lease's TTL (the tests saw etcd sessions lost that way).
        let executor = LoopExecutor(MultiThreadedEventLoopGroup.singleton.any())
        let loop = Task(executorPreference: executor) { [weak session] in
            while !Task.isCancelled {
                guard let delayMs = await session?.step() else { return }
                guard delayMs > 0 else { continue }
                try? await executor.sleep(milliseconds: delayMs)
            }
        }
        session.state.withLock { $0.loop = loop }
        return session
    }

    /// Whether the lease is surely still valid now.
    public var isValid: Bool {
        let now = nowMs()
        return state.withLock { $0.keeper.isValid(nowMs: now) }
    }

    /// Until when (on the session's clock, exclusive) the lease is surely valid.
    public var validUntilMs: Int64 { state.withLock { $0.keeper.validUntilMs } }

    /// Why the session was lost (`.leaseNotFound`, or `.cancelled` once closed); nil while held.
    public var lossReason: WeftError? { state.withLock { $0.keeper.lossReason } }

    /// Returns once the session is lost (at once if it already is), or when the calling task
    /// is cancelled.
    public func lost() async {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.keeper.lossReason != nil || Task.isCancelled { return true }
                    s.waiters[id] = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// Stops the keep-alives and revokes the lease (deleting the keys attached to it).
    /// The session is lost with `.cancelled` from then on. Idempotent.
    public func close() async {
        let loop = state.withLock { s -> Task<Void, Never>? in
            guard !s.closed else { return nil }
            s.closed = true
            return s.loop
        }
        guard let loop else { return }
        loop.cancel()
        announceLost(WeftError(.cancelled, "etcd session closed"))
        do {
            try await client.leaseRevoke(leaseID)
        } catch {
            logger.debug("etcd session: revoking lease \(leaseID) failed: \(error)")
        }
    }

    // MARK: Keep-alive loop

    /// Does what the keeper says now; returns how long to sleep, nil to stop.
    private func step() async -> Int64? {
        let now = nowMs()
        switch state.withLock({ $0.keeper.nextAction(nowMs: now) }) {
        case .lost(let reason):
            announceLost(reason)
            return nil
        case .sleep(let untilMs):
            return max(1, untilMs - now)
        case .keepAlive(let timeoutMs):
            do {
                let ttl = try await client.leaseKeepAlive(leaseID, timeoutMs: timeoutMs)
                state.withLock { $0.keeper.keepAliveSucceeded(sentAtMs: now, ttlSeconds: ttl) }
            } catch {
                logger.debug("etcd session: keep-alive of lease \(leaseID) failed: \(error)")
                let failedAt = nowMs()
                state.withLock { $0.keeper.keepAliveFailed(error, nowMs: failedAt) }
            }
            return 0
        }
    }

    /// Marks the session lost (the first reason wins) and wakes every `lost()` waiter.
    private func announceLost(_ reason: WeftError) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.keeper.markLost(reason)
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        if reason.code != .cancelled {
            logger.notice("etcd session: lease \(leaseID) lost: \(lossReason ?? reason)")
        }
        for w in waiters { w.resume() }
    }
}

/// The origin of `EtcdSession.monotonicNowMs`, fixed at first use.
private enum MonotonicOrigin {
    static let instant = ContinuousClock.now
}
