/// Checks histories of versioned registers for linearizability.
///
/// Each key is checked on its own (linearizability is compositional: a history is
/// linearizable iff every key's subhistory is), by a Wing & Gong search with Lowe's
/// just-in-time linearization and memo (see `KeySearch`).
///
/// The model: keys start absent; a write that takes effect gets a version above every version
/// the key had before (deletes included); a delete of an absent key answers `.notFound`.
/// Definite ops take effect inside their intervals (ops whose intervals touch count as
/// concurrent); a failed one (`.mismatch`, `.notFound`) has no effect. Indeterminate ops
/// (`.pending`) take effect once, any time after their invocation, or never; a write that
/// takes effect so has an unknown version (above the previous one) until a read shows it.
/// Against an unknown version a cas may match if its ifVersion is above the bound, and may
/// always mismatch (the checker does not remember excluded versions: it may miss such a
/// violation, never report a false one).
public enum LinearizabilityChecker {
    /// Checks `history`, giving up with `.unknown` after `budget` (for all keys together).
    public static func check(_ history: [RegisterOp], budget: Duration = .seconds(30)) -> CheckResult {
        let deadline = ContinuousClock.now.advanced(by: budget)
        var indicesByKey: [String: [Int]] = [:]
        for (index, op) in history.enumerated() {
            if let problem = malformation(op) { return .unknown(reason: "malformed op #\(index) (\(op)): \(problem)") }
            indicesByKey[op.key, default: []].append(index)
        }
        for key in indicesByKey.keys.sorted() {
            let indices = indicesByKey[key]!
            var search = KeySearch(history: KeyHistory(key: key, ops: indices.map { history[$0] }, historyIndices: indices))
            switch search.run(deadline: deadline) {
            case .linearizable:
                continue
            case .violation(let violation):
                return .violation(violation)
            case .outOfBudget(let configurations):
                return .unknown(
                    reason: "out of budget (\(budget)) on key \"\(key)\" (\(indices.count) ops) after \(configurations) search nodes")
            }
        }
        return .linearizable(keys: indicesByKey.count, ops: history.count)
    }

    private static func malformation(_ op: RegisterOp) -> String? {
        guard op.result != .pending else { return nil }
        guard let completeNs = op.completeNs else { return "a result without a completion time" }
        return completeNs < op.invokeNs ? "completed before it was invoked" : nil
    }
}
