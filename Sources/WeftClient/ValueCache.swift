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
    private let counters = Atomic<Int>(0)

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

    /// Keeps `kv` until `until` (which must be before the tail's lease ends).
    func store(_ kv: KeyValue, until: ContinuousClock.Instant) {
        entries.withLock { e in
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
