extension KeySearch {
    /// The violation, from the deepest node the search reached.
    func report() -> Violation {
        let inPrefix = Set(bestPath)
        let prefix = bestPath.map { opIndex in
            let op = history.ops[Int(opIndex)]
            return entry(opIndex, note: op.isDefinite ? nil : "indeterminate, taken effect here")
        }
        // The definite ops callable after the prefix: invoked before the first of them completes.
        let open = history.definite.filter { !inPrefix.contains($0) }
        let firstCompletionNs = open.map { history.ops[Int($0)].completeNs ?? .max }.min() ?? .max
        let callable = open.filter { history.ops[Int($0)].invokeNs <= firstCompletionNs }
            .sorted { (history.ops[Int($0)].invokeNs, $0) < (history.ops[Int($1)].invokeNs, $1) }
        let state = history.text(bestState, written: lastWritten())
        let blocked = callable.map { entry($0, note: reason(history.model[Int($0)], holds: state)) }
        return Violation(
            key: history.key, opsOnKey: history.ops.count, prefix: prefix, stateAfterPrefix: state,
            blocked: blocked, configurations: configurations)
    }

    private func entry(_ opIndex: Int32, note: String?) -> Violation.Entry {
        Violation.Entry(index: history.historyIndices[Int(opIndex)], op: history.ops[Int(opIndex)], note: note)
    }

    /// The bytes the last write of the best prefix wrote (nil if it deleted).
    private func lastWritten() -> [UInt8]? {
        for opIndex in bestPath.reversed() {
            switch (history.ops[Int(opIndex)].kind, history.ops[Int(opIndex)].result) {
            case (_, .mismatch): continue
            case (.put(let value), _), (.cas(let value, _), _): return value
            case (.delete, _): return nil
            case (.get, _): continue
            }
        }
        return nil
    }

    /// Why `op` cannot go next in `bestState`, which `stateText` describes.
    private func reason(_ op: ModelOp, holds stateText: String) -> String {
        let state = bestState
        if op.apply(to: state) != nil { return "fits here, but nothing fits after it" }
        let holds = "the register holds \(stateText)"
        switch (op.kind, op.outcome) {
        case (_, .impossible):
            return "no register answers this"
        case (.get, .read(let value, let version)):
            if value == RegisterState.absent || state.isAbsent || state.value != value { return "read \(history.text(value)), but \(holds)" }
            return "read v\(version), but \(holds)"
        case (.put, .written(let version)), (.cas, .written(let version)):
            if op.kind == .cas, !state.mayHaveVersion(op.ifVersion) { return "expected v\(op.ifVersion), but \(holds)" }
            return "got v\(version), not above the last version (\(holds))"
        case (.cas, .mismatch):
            return "reported a mismatch, but \(holds), as it expected"
        case (.delete, .deleted):
            return "deleted, but the key is absent"
        case (.delete, .notFound):
            return "found no key, but \(holds)"
        default:
            return "a \(op.kind) cannot end this way"
        }
    }
}
