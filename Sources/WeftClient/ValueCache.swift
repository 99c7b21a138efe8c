import Synchronization
import WeftCore

/// The client's coherent cache: values read from a chain's tail with a cache lease, kept until
/// shortly before that lease ends. The tail acknowledges no write of a key while a lease on it
/// runs, so a hit is never older than the last acknowledged write. Bounded by `entriesMax`.
final class ValueCache: Sendable {
    struct Entry {
        var kv: KeyValue
        var until: ContinuousClock.Instant
    }

    let entriesMax: Int
    private let entries = Mutex<[String: Entry]>([:])
    /// Bumped by every invalidation: a value read before one is not stored after it (the
    /// invalidation may have been for that very value).
    private let generation = Atomic<UInt64>(0)

    init(entriesMax: Int) {
        self.entriesMax = entriesMax
    }

    /// The cached value, while its lease runs.
    func lookup(_ key: String) -> KeyValue? {
        let now = ContinuousClock.now
        return entries.withLock { e -> KeyValue? in
            guard let entry = e[key] else { return nil }
            if entry.until > now { return entry.kv }
            e[key] = nil
            return nil
        }
    }

    /// The generation to pass to `store` for a read about to be sent.
    var currentGeneration: UInt64 { generation.load(ordering: .acquiring) }

    /// Drops `key` because the server said so.
    func invalidate(_ key: String) {
        entries.withLock { e in
            generation.add(1, ordering: .acquiringAndReleasing)
            e[key] = nil
        }
    }

    /// Keeps `kv` until `until` (which must be before the tail's lease ends), unless an
    /// invalidation came since `readGeneration`.
    func store(_ kv: KeyValue, until: ContinuousClock.Instant, readGeneration: UInt64) {
        entries.withLock { e in
            guard generation.load(ordering: .acquiring) == readGeneration else { return }
            if e.count >= entriesMax, e[kv.key] == nil {
                // Full: drop what has expired, else an arbitrary half.
                let now = ContinuousClock.now
                e = e.filter { $0.value.until > now }
                if e.count >= entriesMax {
                    for key in e.keys.prefix(e.count / 2) { e[key] = nil }
                }
            }
            e[kv.key] = Entry(kv: kv, until: until)
        }
    }

    func remove(_ key: String) {
        _ = entries.withLock { $0.removeValue(forKey: key) }
    }

    var count: Int { entries.withLock { $0.count } }
}
