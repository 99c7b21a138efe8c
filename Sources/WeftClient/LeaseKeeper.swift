import NIOPosix
import Synchronization
import WeftCore

/// Holds a lease alive by refreshing it every third of its TTL until stopped; a refresh that
/// fails for a passing reason (the lease's home node died, its chain fails over) is tried again
/// 200 ms later, not a third of the TTL later, so that the lease outlives a failover shorter
/// than its TTL. If a refresh finds the lease gone, `isLost` turns true (whoever relied on it, a
/// lock say, must stop).
public final class LeaseKeeper: Sendable {
    public let lease: LeaseID
    public let ttlSeconds: Int64
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)
    private let lost = Atomic<Bool>(false)

    public init(client: WeftClient, lease: LeaseID, ttlSeconds: Int64) {
        self.lease = lease
        self.ttlSeconds = ttlSeconds
        // On an event loop, sleeping on its timers (see `LoopExecutor.sleep`): a busy cooperative
        // pool must not delay keep-alives past the lease's TTL.
        let executor = LoopExecutor(MultiThreadedEventLoopGroup.singleton.any())
        let t = Task(executorPreference: executor) { [lost = UnsafeLostFlag(self)] in
            let interval = max(100, ttlSeconds * 1000 / 3)
            let retry = min(interval, 200)
            var delay = interval
            while !Task.isCancelled {
                try? await executor.sleep(milliseconds: delay)
                if Task.isCancelled { break }
                do {
                    try await client.keepAlive(lease: lease)
                    delay = interval
                } catch let e as WeftError where e.code == .leaseNotFound {
                    lost.set()
                    break
                } catch {
                    delay = retry
                }
            }
        }
        task.withLock { $0 = t }
    }

    public var isLost: Bool { lost.load(ordering: .relaxed) }

    /// Stops refreshing (does not revoke).
    public func stop() {
        task.withLock { $0?.cancel() }
    }

    fileprivate func markLost() { lost.store(true, ordering: .relaxed) }
}

/// Weak reference to the keeper so its task does not keep it alive.
private struct UnsafeLostFlag: Sendable {
    weak var keeper: LeaseKeeper?
    init(_ keeper: LeaseKeeper) { self.keeper = keeper }
    func set() { keeper?.markLost() }
}
