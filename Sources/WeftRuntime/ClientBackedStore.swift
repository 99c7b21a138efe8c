import Synchronization
import WeftClient
import WeftCore

/// A `StateStore` whose state lives on a Weft server, reached through a `WeftClient`: lets code
/// written against `StateStore` (the function registry, a worker) run away from the node that
/// holds the state — e.g. `weft deploy` writing code and manifest from the command line, or a
/// cluster node's worker and gateway, whose state is the whole cluster's.
public final class ClientBackedStore: StateStore {
    public let client: WeftClient
    public let limits: StoreLimits

    public init(client: WeftClient, limits: StoreLimits = .default) {
        self.client = client
        self.limits = limits
    }

    public func execute(_ request: StateRequest, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        let client = self.client
        Task {
            do {
                completion(.success(try await client.execute(request)))
            } catch {
                completion(.failure(.wrapping(error)))
            }
        }
    }

    /// A watch through the client (on a cluster: one per shard, each at the shard's tail, see
    /// `ClusterClient.watch`). It starts in the background: errors a store would throw at once
    /// (`compacted` history, a key the server refuses) end it through `sink.terminate`
    /// instead, and `startRevision` is `fromRevision` (0 for a watch from now, whose first
    /// revision is not known yet). `shard` is not supported: a client routes by itself.
    public func watch(_ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink, shard: Int?) throws(WeftError) -> any WatchRegistration {
        guard shard == nil else { throw WeftError(.invalidArgument, "a watch through a client cannot be restricted to one shard") }
        let registration = ClientWatchRegistration(startRevision: fromRevision ?? 0)
        let client = self.client
        let task = Task {
            let watch: WeftWatch
            do {
                watch = try await client.watch(target, fromRevision: fromRevision, keysOnly: !includeValues)
            } catch {
                if !registration.isCancelled { sink.terminate(.wrapping(error)) }
                return
            }
            guard registration.started(watch) else { return }
            do {
                for try await event in watch where !sink.deliver(event) {
                    watch.cancel()
                    sink.terminate(WeftError(.compacted, "the watcher fell behind"))
                    return
                }
                if !registration.isCancelled { sink.terminate(WeftError(.cancelled, "the watch ended")) }
            } catch {
                if !registration.isCancelled { sink.terminate(.wrapping(error)) }
            }
        }
        registration.task = task
        return registration
    }

    public func expireLeases() -> Int { 0 }
}

/// A watch a `ClientBackedStore` runs through its client: cancelling it cancels the client's
/// watch, also one still being created.
final class ClientWatchRegistration: WatchRegistration {
    let startRevision: Revision
    private struct State {
        var cancelled = false
        var watch: WeftWatch?
        var task: Task<Void, Never>?
    }
    private let state = Mutex(State())

    init(startRevision: Revision) {
        self.startRevision = startRevision
    }

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    var task: Task<Void, Never>? {
        get { state.withLock { $0.task } }
        set {
            let cancelled = state.withLock { s in
                s.task = newValue
                return s.cancelled
            }
            if cancelled { newValue?.cancel() }
        }
    }

    /// Records the client's watch; false (and the watch cancelled) if this was cancelled first.
    func started(_ watch: WeftWatch) -> Bool {
        let cancelled = state.withLock { s in
            if !s.cancelled { s.watch = watch }
            return s.cancelled
        }
        if cancelled { watch.cancel() }
        return !cancelled
    }

    func cancel() {
        let (watch, task) = state.withLock { s in
            s.cancelled = true
            defer { s.watch = nil }
            return (s.watch, s.task)
        }
        watch?.cancel()
        task?.cancel()
    }
}
