import Synchronization

/// Adds up the counts that a known number of completions report, and hands the sum on once the
/// last has reported (e.g. the keys each of several deletes, or each node, removed).
public final class Tally: Sendable {
    private let state: Mutex<(left: Int, sum: Int)>
    private let done: @Sendable (Int) -> Void

    /// `done` runs once, on the thread of the `expecting`-th `add`.
    public init(expecting count: Int, done: @escaping @Sendable (Int) -> Void) {
        precondition(count >= 1, "a tally expects at least one report")
        state = Mutex((count, 0))
        self.done = done
    }

    public func add(_ n: Int) {
        let total: Int? = state.withLock { t in
            t.left -= 1
            t.sum += n
            return t.left == 0 ? t.sum : nil
        }
        if let total { done(total) }
    }
}
