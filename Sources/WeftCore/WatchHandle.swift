import Synchronization

/// Counts live watches for `status`; shared by the store and its watch handles (a handle
/// must not retain the store, or the store could never shut its watches down in `deinit`).
final class WatcherCount: Sendable {
    let value = Atomic<Int>(0)
}

/// One watch as the hubs hold it, and the registration handed to the caller.
final class WatchHandle: WatchRegistration, Sendable {
    let target: WatchTarget
    /// The byte-exact key for a key watch, nil for a prefix watch.
    let key: ByteKey?
    let includeValues: Bool
    let sink: any WatchSink
    let startRevision: Revision
    /// The hubs this watch is (or is being) registered in.
    let hubs: [WatchHub]
    private let count: WatcherCount
    private let ended = Atomic<Bool>(false)

    init(target: WatchTarget, includeValues: Bool, sink: any WatchSink, startRevision: Revision, hubs: [WatchHub], count: WatcherCount) {
        self.target = target
        if case .key(let key) = target { self.key = ByteKey(key) } else { self.key = nil }
        self.includeValues = includeValues
        self.sink = sink
        self.startRevision = startRevision
        self.hubs = hubs
        self.count = count
        count.value.add(1, ordering: .relaxed)
    }

    var isEnded: Bool { ended.load(ordering: .acquiring) }

    /// Whether this watch wants `event` (by key and revision; ended watches want nothing).
    func wants(_ event: WatchEvent) -> Bool {
        guard event.revision >= startRevision, !isEnded else { return false }
        if let key { return key == ByteKey(event.kv.key) }
        return target.matches(event.kv.key)
    }

    /// Stops delivery and leaves every hub. Idempotent; the sink is not terminated.
    func cancel() {
        guard finish() else { return }
        for hub in hubs { hub.remove(self) }
    }

    /// Ends the watch from the store's side and tells the sink why (once). Must be called
    /// without any store lock held: the sink may call back into the store.
    func end(_ error: WeftError) {
        guard finish() else { return }
        for hub in hubs { hub.remove(self) }
        sink.terminate(error)
    }

    /// Marks the watch ended; true for the one caller that did it.
    private func finish() -> Bool {
        guard ended.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        count.value.subtract(1, ordering: .relaxed)
        return true
    }
}
