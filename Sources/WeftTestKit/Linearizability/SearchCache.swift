/// Configurations from which no linearization exists (Lowe's memo), with subsumption: a
/// configuration is as good as dead if a failed one *dominates* it. Only configurations
/// searched without a constraint go in (see `KeySearch`): theirs are true failures.
///
/// A configuration is the set of definite ops linearized, the register state, and the set of
/// indeterminate ops used. Failed configuration F dominates C if both linearized the same
/// definite ops, their states differ at most in the version bound, F's bound is not higher
/// (it allows every later op C allows) and F used a subset of C's indeterminate ops (F may
/// still use the others, or never use them). Anything C can still do, F could have done.
struct SearchCache {
    struct Key: Hashable {
        var hash: UInt64
        var definite: [UInt64]
        var value: Int32
        var known: Bool
        var knownVersion: UInt64

        func hash(into hasher: inout Hasher) { hasher.combine(hash) }

        static func == (a: Key, b: Key) -> Bool {
            a.hash == b.hash && a.value == b.value && a.known == b.known && a.knownVersion == b.knownVersion
                && a.definite == b.definite
        }
    }

    struct Failed {
        var pending: [UInt64]
        var bound: UInt64

        func dominates(pending other: [UInt64], bound otherBound: UInt64) -> Bool {
            guard bound <= otherBound else { return false }
            for index in pending.indices where pending[index] & ~other[index] != 0 { return false }
            return true
        }
    }

    private var failed: [Key: [Failed]] = [:]
    private(set) var count = 0

    static func key(definite: [UInt64], definiteHash: UInt64, state: RegisterState) -> Key {
        let knownVersion = state.known ? state.version : 0
        var hash = definiteHash ^ (UInt64(UInt32(bitPattern: state.value)) &* 0x9E37_79B9_7F4A_7C15)
        hash ^= (knownVersion &+ (state.known ? 0x5555 : 0)) &* 0xBF58_476D_1CE4_E5B9
        return Key(hash: hash, definite: definite, value: state.value, known: state.known, knownVersion: knownVersion)
    }

    func isDominated(_ key: Key, pending: [UInt64], bound: UInt64) -> Bool {
        guard let entries = failed[key] else { return false }
        return entries.contains { $0.dominates(pending: pending, bound: bound) }
    }

    /// Records a failed configuration, dropping the ones it dominates.
    mutating func insert(_ key: Key, pending: [UInt64], bound: UInt64) {
        let entry = Failed(pending: pending, bound: bound)
        failed[key, default: []].removeAll { old in
            let dominated = entry.dominates(pending: old.pending, bound: old.bound)
            if dominated { count -= 1 }
            return dominated
        }
        failed[key, default: []].append(entry)
        count += 1
    }
}
