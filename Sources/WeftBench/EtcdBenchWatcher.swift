import NIOCore
import NIOPosix
import WeftCluster

/// An etcd watch (WeftCluster's `EtcdWatch`, on its own connection) as a bench watcher. A task
/// of its own takes the events from the watch and stamps them: the same point ("a task of the
/// application has the event", one event-loop→task hop after the socket) at which
/// `TaskStampedWatcher` stamps Weft's and Redis's events.
public final class EtcdBenchWatcher: BenchWatcher {
    private let client: EtcdClient
    private let watch: EtcdWatch
    private let queue = NoticeQueue()
    private let pump: Task<Void, Never>

    private init(client: EtcdClient, watch: EtcdWatch) {
        self.client = client
        self.watch = watch
        let queue = self.queue
        pump = Task {
            while true {
                do {
                    let events = try await watch.next()
                    let now = ContinuousClock.now
                    for event in events {
                        switch event {
                        case .put(let kv):
                            queue.push(WatchNotice(key: kv.key, value: kv.value, revision: UInt64(kv.modRevision), receivedAt: now))
                        case .delete(let key, let revision):
                            queue.push(WatchNotice(key: key, value: [], revision: UInt64(revision), receivedAt: now))
                        }
                    }
                } catch {
                    queue.finish(error)
                    return
                }
            }
        }
    }

    /// Connects, watches `key` (every key under it with `prefix`) from now on, and returns once
    /// etcd acknowledged the watch (connecting and the acknowledgement bounded by `timeout`).
    public static func start(
        host: String, port: Int, key: String, prefix: Bool = false, timeout: Duration = .seconds(10),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> EtcdBenchWatcher {
        let timeoutMs = max(1, timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let client = try await EtcdClient.connect(
            endpoints: [EtcdEndpoint(host: host, port: port).description], requestTimeoutMs: timeoutMs, group: group)
        do {
            let watch = prefix ? try await client.watch(prefix: key) : try await client.watch(key: key)
            return EtcdBenchWatcher(client: client, watch: watch)
        } catch {
            await client.close()
            throw error
        }
    }

    public func next(timeout: Duration) async throws -> WatchNotice {
        try await queue.next(timeout: timeout)
    }

    public func close() async {
        queue.finish(BenchError.connectionClosed("watcher closed"))
        watch.cancel()
        pump.cancel()
        await client.close()
    }
}
