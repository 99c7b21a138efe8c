/// Why one key's history is not linearizable, for a human: the longest prefix the search could
/// linearize, the register's state after it, and the ops that could not go next.
public struct Violation: Sendable, CustomStringConvertible {
    /// An op of the history, with its index there and, if useful, a remark.
    public struct Entry: Sendable, CustomStringConvertible {
        /// The op's index in the checked history.
        public let index: Int
        public let op: RegisterOp
        public let note: String?

        public var description: String {
            "#\(index) \(op)" + (note.map { ": \($0)" } ?? "")
        }
    }

    /// Prefix ops shown by `description` (the last ones).
    public static let prefixShownMax = 10

    public let key: String
    /// Ops on the key the search considered (indeterminate reads are dropped).
    public let opsOnKey: Int
    /// The longest linearizable prefix found, in linearization order. Indeterminate writes in
    /// it are ones the search let take effect.
    public let prefix: [Entry]
    /// The register after `prefix`.
    public let stateAfterPrefix: String
    /// The definite ops that could go next by their times (invoked before the first of them
    /// completed), none of which fits, each with the reason.
    public let blocked: [Entry]
    /// Search nodes visited on the key.
    public let configurations: Int

    public var description: String {
        var lines = ["not linearizable: key \"\(key)\" (\(opsOnKey) ops, \(configurations) search nodes)"]
        let shown = prefix.suffix(Self.prefixShownMax)
        let elided = prefix.count - shown.count
        lines.append(
            "longest linearizable prefix: \(prefix.count) ops" + (elided > 0 ? ", the last \(shown.count):" : (prefix.isEmpty ? "" : ":")))
        lines += shown.map { "  \($0)" }
        lines.append("register after the prefix: \(stateAfterPrefix)")
        lines.append("no op fits next:")
        lines += blocked.map { "  \($0)" }
        return lines.joined(separator: "\n")
    }
}

/// The verdict on a history.
public enum CheckResult: Sendable, CustomStringConvertible {
    /// Every key's subhistory has a linearization.
    case linearizable(keys: Int, ops: Int)
    /// Some key's subhistory has none.
    case violation(Violation)
    /// The search ran out of budget, or the history is malformed.
    case unknown(reason: String)

    public var isLinearizable: Bool {
        if case .linearizable = self { return true }
        return false
    }

    public var violation: Violation? {
        if case .violation(let violation) = self { return violation }
        return nil
    }

    public var description: String {
        switch self {
        case .linearizable(let keys, let ops): "linearizable (\(keys) keys, \(ops) ops)"
        case .violation(let violation): violation.description
        case .unknown(let reason): "unknown: \(reason)"
        }
    }
}
