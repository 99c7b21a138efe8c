/// One key's subhistory, compiled for the search: values interned, ops split into definite
/// ones (each must be linearized inside its interval) and indeterminate writes (each may be
/// linearized once, any time after its invocation, or never). Indeterminate reads are dropped:
/// they constrain nothing.
final class KeyHistory {
    let key: String
    /// The key's ops, in the order of the checked history.
    let ops: [RegisterOp]
    /// Each op's index in the checked history.
    let historyIndices: [Int]
    let model: [ModelOp]
    /// Bytes by value id; id 0 stands for every value no get returned.
    let values: [[UInt8]]
    /// Op index by definite number.
    let definite: [Int32]
    /// By value id: how many definite gets return it.
    let readerCounts: [Int32]
    /// Indeterminate writes in classes of identical effect (kind, value id, ifVersion), sorted by
    /// their first member's invocation. Any two members are interchangeable once both are
    /// invoked, so the search only ever uses a class's earliest unused member: the used ones
    /// are a prefix. Members are stored flat, class after class, each class by invocation;
    /// a member's position is also its bit in the set of used indeterminate ops.
    let classEffect: [ModelOp]
    /// Class c's members are at `classStart[c]..<classStart[c + 1]`.
    let classStart: [Int]
    /// Op index by member position.
    let members: [Int32]
    let memberInvokeNs: [UInt64]
    var classCount: Int { classEffect.count }
    var pendingCount: Int { members.count }

    init(key: String, ops: [RegisterOp], historyIndices: [Int]) {
        var kept: [RegisterOp] = []
        var keptIndices: [Int] = []
        for (op, index) in zip(ops, historyIndices) where !(op.kind == .get && op.result == .pending) {
            kept.append(op)
            keptIndices.append(index)
        }
        self.key = key
        self.ops = kept
        self.historyIndices = keptIndices

        // Only values some get returned get their own id.
        var ids: [[UInt8]: Int32] = [:]
        var values: [[UInt8]] = [[]]
        for op in kept {
            if case .get(let value?, _) = op.result, ids[value] == nil {
                ids[value] = Int32(values.count)
                values.append(value)
            }
        }
        self.values = values
        func id(_ value: [UInt8]) -> Int32 { ids[value] ?? RegisterState.unread }

        let model = kept.map { op in
            let outcome: ModelOp.Outcome
            switch op.result {
            case .pending: outcome = .pending
            case .get(nil, 0): outcome = .read(value: RegisterState.absent, version: 0)
            case .get(nil, _), .get(_, 0): outcome = .impossible
            case .get(let value?, let version): outcome = .read(value: id(value), version: version)
            case .written(let version): outcome = .written(version: version)
            case .mismatch: outcome = .mismatch
            case .deleted: outcome = .deleted
            case .notFound: outcome = .notFound
            }
            switch op.kind {
            case .get: return ModelOp(kind: .get, value: 0, ifVersion: 0, outcome: outcome)
            case .put(let value): return ModelOp(kind: .put, value: id(value), ifVersion: 0, outcome: outcome)
            case .cas(let value, let ifVersion): return ModelOp(kind: .cas, value: id(value), ifVersion: ifVersion, outcome: outcome)
            case .delete: return ModelOp(kind: .delete, value: 0, ifVersion: 0, outcome: outcome)
            }
        }

        struct Effect: Hashable {
            var kind: UInt8
            var value: Int32
            var ifVersion: UInt64
        }
        var definite: [Int32] = []
        var classOf: [Effect: Int] = [:]
        var classes: [[Int32]] = []
        for (index, op) in model.enumerated() {
            if op.outcome != .pending {
                definite.append(Int32(index))
                continue
            }
            let effect = Effect(kind: op.kind.rawValue, value: op.value, ifVersion: op.ifVersion)
            if let existing = classOf[effect] {
                classes[existing].append(Int32(index))
            } else {
                classOf[effect] = classes.count
                classes.append([Int32(index)])
            }
        }
        for index in classes.indices {
            classes[index].sort { (kept[Int($0)].invokeNs, $0) < (kept[Int($1)].invokeNs, $1) }
        }
        classes.sort { kept[Int($0[0])].invokeNs < kept[Int($1[0])].invokeNs }
        self.model = model
        self.definite = definite
        var readerCounts = [Int32](repeating: 0, count: values.count)
        for op in model {
            if case .read(let value, _) = op.outcome, value > RegisterState.unread { readerCounts[Int(value)] += 1 }
        }
        self.readerCounts = readerCounts
        classEffect = classes.map { model[Int($0[0])] }
        let members = classes.flatMap { $0 }
        self.members = members
        memberInvokeNs = members.map { kept[Int($0)].invokeNs }
        classStart = classes.reduce(into: [0]) { starts, members in starts.append(starts.last! + members.count) }
    }

    /// A value id for humans.
    func text(_ value: Int32) -> String {
        switch value {
        case RegisterState.absent: "absent"
        case RegisterState.unread: "a value no get returned"
        default: ValueText(values[Int(value)]).description
        }
    }

    /// A state for humans; `written` is the value bytes if known (the search only keeps ids).
    func text(_ state: RegisterState, written: [UInt8]? = nil) -> String {
        if state.isAbsent { return "absent (next version > \(state.version))" }
        let value = written.map { ValueText($0).description } ?? text(state.value)
        return state.known ? "\(value) at v\(state.version)" : "\(value) at an unknown version > \(state.version)"
    }
}
