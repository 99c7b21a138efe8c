import Synchronization

/// The watch side of one shard: the shard's recent events and the watches that follow it.
/// Events are published in the shard's revision order; `register` replays history and
/// subscribes atomically, so a watch sees every event from its start revision exactly once.
final class WatchHub: Sendable {
    private struct State: Sendable {
        var history: EventRing
        /// Events with revision ≤ this are gone (evicted, or from before the store started).
        var compactedThrough: Revision
        var keyWatchers: [ByteKey: [WatchHandle]] = [:]
        var prefixWatchers: [WatchHandle] = []

        mutating func remove(_ handle: WatchHandle) {
            if let key = handle.key {
                guard var list = keyWatchers[key] else { return }
                list.removeAll { $0 === handle }
                keyWatchers[key] = list.isEmpty ? nil : list
            } else {
                prefixWatchers.removeAll { $0 === handle }
            }
        }

        mutating func purgeEnded() {
            prefixWatchers.removeAll { $0.isEnded }
            keyWatchers = keyWatchers.compactMapValues { list in
                let live = list.filter { !$0.isEnded }
                return live.isEmpty ? nil : live
            }
        }
    }

    private let state: Mutex<State>
    /// Set by a `remove` that could not take the lock (e.g. `cancel()` called from inside a
    /// sink's `deliver`); whoever holds the lock next drops ended watches.
    private let purgeRequested = Atomic<Bool>(false)

    init(historyCount: Int, historyValueBytesMax: Int, compactedThrough: Revision) {
        state = Mutex(State(
            history: EventRing(capacity: historyCount, valueBytesMax: historyValueBytesMax),
            compactedThrough: compactedThrough))
    }

    /// Records `event` and delivers it to the watches that want it. Returns the watches whose
    /// sink refused it (already removed here); the caller ends them once no lock is held.
    func publish(_ event: WatchEvent) -> [WatchHandle] {
        state.withLock { state in
            if let evicted = state.history.append(event) {
                state.compactedThrough = max(state.compactedThrough, evicted)
            }
            var refused: [WatchHandle] = []
            var withoutValue: WatchEvent?
            func deliver(to handle: WatchHandle) {
                guard handle.wants(event) else { return }
                let delivered: WatchEvent
                if handle.includeValues || event.kv.value.isEmpty {
                    delivered = event
                } else {
                    if withoutValue == nil { withoutValue = event.withoutValue }
                    delivered = withoutValue!
                }
                if !handle.sink.deliver(delivered) { refused.append(handle) }
            }
            if !state.keyWatchers.isEmpty, let list = state.keyWatchers[ByteKey(event.kv.key)] {
                for handle in list { deliver(to: handle) }
            }
            for handle in state.prefixWatchers { deliver(to: handle) }
            for handle in refused { state.remove(handle) }
            purgeIfRequested(&state)
            return refused
        }
    }

    /// Whether events from `revision` on are no longer all in this hub's history.
    func isCompacted(from revision: Revision) -> Bool {
        state.withLock { $0.compactedThrough >= revision }
    }

    /// Atomically: checks the history still holds everything from `handle.startRevision`,
    /// replays what the watch wants, and subscribes it. Returns false, without subscribing,
    /// if the sink refused a replayed event.
    func register(_ handle: WatchHandle) throws(WeftError) -> Bool {
        try state.withLock { (state) throws(WeftError) -> Bool in
            defer { purgeIfRequested(&state) }
            let from = handle.startRevision
            guard from > state.compactedThrough else {
                throw WeftError(.compacted, "revision \(from) is compacted; history starts after \(state.compactedThrough)")
            }
            for index in 0..<state.history.count {
                let event = state.history[index]
                guard handle.wants(event) else { continue }
                if !handle.sink.deliver(handle.includeValues ? event : event.withoutValue) { return false }
            }
            if let key = handle.key {
                state.keyWatchers[key, default: []].append(handle)
            } else {
                state.prefixWatchers.append(handle)
            }
            return true
        }
    }

    /// Unsubscribes `handle`. If the lock is busy (possibly held by this very thread, inside
    /// a sink's `deliver`), the removal is left to the lock's next holder.
    func remove(_ handle: WatchHandle) {
        if tryRemove(handle) { return }
        purgeRequested.store(true, ordering: .releasing)
        // The holder may have looked at the flag already; try once more before leaving it.
        _ = tryRemove(handle)
    }

    private func tryRemove(_ handle: WatchHandle) -> Bool {
        let removed: Bool? = state.withLockIfAvailable { state in
            state.remove(handle)
            purgeIfRequested(&state)
            return true
        }
        return removed != nil
    }

    /// Removes and returns every watch (the store is going away).
    func drain() -> [WatchHandle] {
        state.withLock { state in
            let all = state.prefixWatchers + state.keyWatchers.values.joined()
            state.prefixWatchers = []
            state.keyWatchers = [:]
            return all
        }
    }

    private func purgeIfRequested(_ state: inout State) {
        if purgeRequested.exchange(false, ordering: .acquiringAndReleasing) { state.purgeEnded() }
    }
}

extension WatchEvent {
    /// The event as a keys-only watch sees it.
    var withoutValue: WatchEvent {
        var copy = self
        copy.kv.value = []
        return copy
    }
}
