import Synchronization
import WeftCore
import WeftWire

extension ClusterClient {
    /// Watches a key, or every key under a prefix, across the cluster.
    ///
    /// Revisions are per shard: a key watch gets its key's events in version order with no gaps
    /// or duplicates, as on a single node; a prefix watch gets each shard's events that way,
    /// shards interleaved as they come. `fromRevision` applies to every shard watched
    /// (`compacted` if a shard's history no longer reaches it); nil starts from each shard's
    /// next change.
    ///
    /// Each shard is followed at its tail. When that node dies, leaves the chain or ends the
    /// watch, the shard is followed at its new tail from the revision after the last event
    /// delivered; the watch ends only when that fails for 30 s, or with `compacted`.
    public func watch(_ target: WatchTarget, fromRevision: Revision? = nil, keysOnly: Bool = false) async throws(WeftError) -> WeftWatch {
        guard let m = map else { throw WeftError(.unavailable, "no shard map") }
        let shards: [Int]
        switch target {
        case .key(let key):
            try StateKey.validate(key)
            shards = [m.shard(of: key)]
        case .prefix(let prefix):
            _ = try StateKey.validatePrefix(bytes: prefix.utf8)
            shards = Array(0..<m.shardCount)
        }
        return try await follow(target, shards: shards, from: fromRevision, after: [:], keysOnly: keysOnly).watch
    }

    /// A prefix watch that resumes shard by shard: in each shard `s` it starts after
    /// `cursor[s]` (from the shard's next change where `cursor` has no entry). Returns the
    /// watch and, for every shard, the revision it started after. Revisions are per shard, so
    /// this is how a consumer that must not miss a change (a trigger) keeps its place:
    /// `shardMap.shard(of: event.kv.key)` says which shard an event is of.
    public func watch(prefix: String, after cursor: [Int: Revision], keysOnly: Bool = false) async throws(WeftError) -> (watch: WeftWatch, startedAfter: [Int: Revision]) {
        guard let m = map else { throw WeftError(.unavailable, "no shard map") }
        _ = try StateKey.validatePrefix(bytes: prefix.utf8)
        return try await follow(.prefix(prefix), shards: Array(0..<m.shardCount), from: nil, after: cursor, keysOnly: keysOnly)
    }

    private func follow(
        _ target: WatchTarget, shards: [Int], from: Revision?, after: [Int: Revision], keysOnly: Bool
    ) async throws(WeftError) -> (watch: WeftWatch, startedAfter: [Int: Revision]) {
        let watch = WeftWatch.make(bufferMax: WeftClient.Options().watchBufferMax)
        let stream = watch.stream
        let follower = ShardWatchFollower(client: self, target: target, keysOnly: keysOnly, shards: shards, from: from, after: after, stream: stream)
        // Not inline: cancel can come from inside a delivery, which holds the follower's lock.
        stream.setOnCancel { Task { follower.stop() } }
        if let error = await follower.start() {
            follower.stop()
            stream.finish(error)
            throw error
        }
        // Read before any event is taken from the stream: where each shard started.
        let positions = follower.positions
        stream.created(startRevision: follower.startRevision)
        return (watch, positions)
    }
}

/// Follows the shards of one cluster watch, each at its tail, through map changes.
final class ShardWatchFollower: Sendable {
    struct Follow {
        /// The node followed, nil while (re)opening.
        var node: String?
        var watch: WeftWatch?
        var task: Task<Void, Never>?
        /// Bumped on each reroute: events of an older generation's watch are dropped.
        var generation = 0
        /// The last revision delivered (or the one before the watch's start).
        var last: Revision?
    }

    struct State {
        var follows: [Int: Follow] = [:]
        var stopped = false
        var checker: Task<Void, Never>?
    }

    /// How long a shard may go without a tail to follow before the watch ends.
    static let rerouteMs: Int64 = 30_000

    let client: ClusterClient
    let target: WatchTarget
    let keysOnly: Bool
    let shards: [Int]
    let from: Revision?
    let stream: WatchStream
    private let state: Mutex<State>

    /// `after`: shards that start after a given revision (the rest start at `from`).
    init(client: ClusterClient, target: WatchTarget, keysOnly: Bool, shards: [Int], from: Revision?, after: [Int: Revision] = [:], stream: WatchStream) {
        self.client = client
        self.target = target
        self.keysOnly = keysOnly
        self.shards = shards
        self.from = from
        self.stream = stream
        var initial = State()
        for s in shards { initial.follows[s] = Follow(last: after[s]) }
        state = Mutex(initial)
    }

    /// Per shard, the last revision delivered (or the one before where it started).
    var positions: [Int: Revision] {
        state.withLock { st in st.follows.compactMapValues(\.last) }
    }

    /// The first revision delivered: the lowest over the shards.
    var startRevision: Revision {
        state.withLock { st in st.follows.values.compactMap { $0.last.map { $0 + 1 } }.min() ?? (from ?? 0) }
    }

    /// Opens every shard's watch; nil once all are registered, else the first error.
    func start() async -> WeftError? {
        let deadlineMs = client.options.deadlineMs
        let failure = await withTaskGroup(of: WeftError?.self) { group in
            for s in shards { group.addTask { await self.open(s, generation: 0, deadlineMs: deadlineMs) } }
            var first: WeftError?
            for await error in group where first == nil { first = error }
            return first
        }
        if failure == nil {
            let checker = Task { await self.checkLoop() }
            state.withLock { $0.checker = checker }
        }
        return failure
    }

    func stop() {
        let (watches, tasks): ([WeftWatch], [Task<Void, Never>]) = state.withLock { st in
            st.stopped = true
            let follows = Array(st.follows.values)
            return (follows.compactMap(\.watch), follows.compactMap(\.task) + (st.checker.map { [$0] } ?? []))
        }
        for w in watches { w.cancel() }
        for t in tasks { t.cancel() }
    }

    private func finish(_ error: WeftError) {
        stop()
        stream.finish(error)
    }

    /// Opens shard `s`'s watch at its tail in the newest map, from after the last revision
    /// delivered, retrying routing failures until `deadlineMs` has passed.
    private func open(_ s: Int, generation: Int, deadlineMs: Int64) async -> WeftError? {
        let deadline = ContinuousClock.now + .milliseconds(deadlineMs)
        var delayMs = 5
        while true {
            let (current, from) = state.withLock { st in
                (!st.stopped && st.follows[s]?.generation == generation, st.follows[s]?.last.map { $0 + 1 } ?? self.from)
            }
            guard current else { return nil }
            var failure = WeftError(.unavailable, "shard \(s) has no tail in the shard map")
            if let m = client.map, let node = m.tail(s), let address = m.address(of: node) {
                do throws(WeftError) {
                    let shard: Int? = if case .prefix = target { s } else { nil }
                    let watch = try await client.client(address).watch(target, fromRevision: from, keysOnly: keysOnly, shard: shard)
                    let installed = state.withLock { st -> Bool in
                        guard !st.stopped, st.follows[s]?.generation == generation else { return false }
                        st.follows[s]!.node = node
                        st.follows[s]!.watch = watch
                        if st.follows[s]!.last == nil { st.follows[s]!.last = watch.startRevision &- 1 }
                        return true
                    }
                    guard installed else {
                        watch.cancel()
                        return nil
                    }
                    let task = Task { await self.pump(s, generation: generation, watch) }
                    state.withLock { $0.follows[s]?.task = task }
                    return nil
                } catch {
                    switch error.code {
                    case .compacted, .invalidArgument, .invalidKey, .cancelled: return error
                    default: failure = error
                    }
                }
            }
            guard ContinuousClock.now < deadline else { return failure }
            try? await Task.sleep(for: .milliseconds(delayMs))
            delayMs = min(delayMs * 2, 200)
            await client.refresh()
        }
    }

    /// Passes a shard watch's events on until it ends; then follows the shard elsewhere.
    private func pump(_ s: Int, generation: Int, _ watch: WeftWatch) async {
        var ending: WeftError?
        do {
            for try await event in watch {
                guard deliver(s, generation: generation, event) else { return }
            }
        } catch let error as WeftError {
            ending = error
        } catch {
            ending = WeftError(.unavailable, "\(error)")
        }
        if ending?.code == .compacted { return finish(ending!) }
        // Ended by the node (it left the chain, lost its membership, went away): follow the
        // shard at its tail now. A watch cancelled here has a newer generation already.
        await reroute(s, from: generation)
    }

    private func deliver(_ s: Int, generation: Int, _ event: WatchEvent) -> Bool {
        state.withLock { st in
            guard !st.stopped, st.follows[s]?.generation == generation else { return false }
            if let last = st.follows[s]!.last, event.revision <= last { return true }
            st.follows[s]!.last = event.revision
            stream.receive([event])
            return true
        }
    }

    /// Moves shard `s` to its current tail, unless it moved on from `generation` already.
    private func reroute(_ s: Int, from generation: Int) async {
        let (old, next): (WeftWatch?, Int?) = state.withLock { st in
            guard !st.stopped, st.follows[s]?.generation == generation else { return (nil, nil) }
            st.follows[s]!.generation += 1
            defer {
                st.follows[s]!.watch = nil
                st.follows[s]!.node = nil
            }
            return (st.follows[s]!.watch, st.follows[s]!.generation)
        }
        guard let next else { return }
        old?.cancel()
        await client.refresh()
        if let error = await open(s, generation: next, deadlineMs: Self.rerouteMs) { finish(error) }
    }

    /// Once a second, checks that each followed node is still in its shard's chain (a node
    /// cut off from the cluster is dropped from chains without knowing it, and sees no more
    /// changes); a shard whose node is not is followed at its tail.
    private func checkLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if Task.isCancelled || state.withLock({ $0.stopped }) { return }
            if client.isClosed { return finish(WeftError(.cancelled, "the cluster client was closed")) }
            await client.refresh()
            guard let m = client.map else { continue }
            let moved: [(Int, Int)] = state.withLock { st in
                st.follows.compactMap { s, f in
                    guard let node = f.node, s < m.shardCount, !m.chains[s].contains(node) else { return nil }
                    return (s, f.generation)
                }
            }
            for (s, generation) in moved { Task { await self.reroute(s, from: generation) } }
        }
    }
}
