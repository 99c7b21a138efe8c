/// The search for one key: Wing & Gong's depth-first search for a linearization, with Lowe's
/// just-in-time linearization and memo (here with subsumption, see `SearchCache`).
///
/// Definite ops sit in a doubly linked list of call and return entries sorted by time; an op
/// may be linearized next if its call precedes the first return still in the list. An
/// indeterminate write has no return: it may be linearized once its invocation precedes that
/// first return, or never. The search succeeds when every definite op is linearized.
///
/// Reductions keep it small; each keeps some linearization if there is one:
/// - a callable op that leaves the state unchanged (a read that matches, a cas mismatch, a
///   delete of an absent key) is linearized at once, without trying alternatives;
/// - an indeterminate write goes next only if it enables a callable definite op that does not
///   fit without it (directly or through more indeterminate writes), and the op after it must
///   be one that needs it: any other could go before it, and an overwrite makes it pointless;
/// - of interchangeable indeterminate writes, only one is tried;
/// - the memo prunes configurations dominated by one that failed.
/// Definite ops are tried first, then indeterminate writes, most recently invoked first: they
/// usually take effect soon after their invocation, and a configuration that is tried first
/// and fails should be the one using fewer of them, so that it prunes the others.
struct KeySearch {
    enum Outcome {
        case linearizable
        case violation(Violation)
        case outOfBudget(configurations: Int)
    }

    /// The choice that led from a node to its child, and how to resume the node's iteration.
    private struct Frame {
        var op: Int32
        /// The class of an indeterminate op; -1 for a definite one.
        var pendingClass: Int32
        var previous: RegisterState
        /// Definite phase: the call entry of `op`; the node resumes after it.
        var entry: Int32
        /// Pending phase: the node's candidate classes in `candidates` and the next to try.
        var candidateStart: Int32
        var candidateCount: Int32
        var candidateNext: Int32
        /// `candidates.count` when the child was pushed.
        var candidatesCount: Int32
        var inPendingPhase: Bool
        /// The only child worth trying: when it fails, the node fails.
        var forced: Bool
    }

    let history: KeyHistory
    private let definiteCount: Int
    /// Entries: 2d is definite op d's call, 2d+1 its return; `head` is the sentinel.
    private var next: [Int32]
    private var prev: [Int32]
    private let entryNs: [UInt64]
    private let head: Int32
    private let zobrist: [UInt64]

    private var state = RegisterState.initial
    private var linearized: [UInt64]
    private var linearizedHash: UInt64 = 0
    private var linearizedCount = 0
    private var used: [UInt64]
    private var classUsed: [Int]
    /// By value id: definite gets returning it not yet linearized.
    private var readersLeft: [Int32]
    private var stack: [Frame] = []
    /// Key-local op indices of the current prefix, in linearization order.
    private var path: [Int32] = []
    private var candidates: [Int32] = []
    /// Scratch space for `collectPendingCandidates`: the callable definite ops, the callable
    /// indeterminate class heads that fit now, those of cas and delete, the chain explored.
    private var window: [ModelOp] = []
    private var heads: [Int32] = []
    private var conditionalHeads: [Int32] = []
    private var chain: [Int32] = []
    private var continuations: [(isAbsent: Bool, version: UInt64, continues: Bool)] = []
    private var anonymousCasSeen: [UInt64] = []
    private var cache = SearchCache()
    private(set) var configurations = 0

    /// The deepest node reached (most definite ops linearized), for the report.
    private(set) var bestCount = -1
    private(set) var bestPath: [Int32] = []
    private(set) var bestState = RegisterState.initial

    init(history: KeyHistory) {
        self.history = history
        let count = history.definite.count
        definiteCount = count
        head = Int32(2 * count)
        var entryNs = [UInt64](repeating: .max, count: 2 * count + 1)
        for (number, opIndex) in history.definite.enumerated() {
            let op = history.ops[Int(opIndex)]
            entryNs[2 * number] = op.invokeNs
            entryNs[2 * number + 1] = op.completeNs ?? .max
        }
        self.entryNs = entryNs
        // By time; a call before a return at the same time (such ops count as concurrent).
        let order = (0..<Int32(2 * count)).sorted { a, b in
            (entryNs[Int(a)], a & 1, a) < (entryNs[Int(b)], b & 1, b)
        }
        next = [Int32](repeating: 0, count: 2 * count + 1)
        prev = [Int32](repeating: 0, count: 2 * count + 1)
        var last = Int32(2 * count)
        for entry in order {
            next[Int(last)] = entry
            prev[Int(entry)] = last
            last = entry
        }
        next[Int(last)] = head
        prev[Int(head)] = last

        var generator = SplitMix64(seed: 0x5EED_1234_ABCD_0001)
        zobrist = (0..<count).map { _ in generator.next() }
        linearized = [UInt64](repeating: 0, count: (count + 63) / 64)
        used = [UInt64](repeating: 0, count: (history.pendingCount + 63) / 64)
        classUsed = [Int](repeating: 0, count: history.classCount)
        readersLeft = history.readerCounts
    }

    private func isCall(_ entry: Int32) -> Bool { entry & 1 == 0 }

    /// The value id definite op `number` reads, if it is a get of a value.
    private func readValue(definite number: Int32) -> Int32? {
        guard case .read(let value, _) = model(definite: number).outcome, value > RegisterState.unread else { return nil }
        return value
    }

    private func model(definite number: Int32) -> ModelOp {
        history.model[Int(history.definite[Int(number)])]
    }

    mutating func run(deadline: ContinuousClock.Instant) -> Outcome {
        var cursor = next[Int(head)]
        var inPendingPhase = false
        var candidateStart = 0
        var candidateCount = 0
        var candidateNext = 0
        var fresh = true
        var steps = 0

        while linearizedCount < definiteCount {
            steps += 1
            if steps & 1023 == 0, ContinuousClock.now > deadline {
                return .outOfBudget(configurations: configurations)
            }
            if fresh {
                fresh = false
                configurations += 1
                if linearizedCount > bestCount {
                    bestCount = linearizedCount
                    bestPath = path
                    bestState = state
                }
                if let forced = unchangingCandidate() {
                    if !push(definite: forced >> 1, entry: forced, newState: state, forced: true) {
                        guard backtrack(&cursor, &inPendingPhase, &candidateStart, &candidateCount, &candidateNext) else {
                            return .violation(report())
                        }
                        continue
                    }
                    fresh = true
                    continue
                }
                cursor = next[Int(head)]
                inPendingPhase = false
            }
            if !inPendingPhase {
                let entry = cursor
                if entry != head, isCall(entry) {
                    cursor = next[Int(entry)]
                    let number = entry >> 1
                    let op = model(definite: number)
                    if let newState = op.apply(to: state), !fits(op, constraint),
                        push(definite: number, entry: entry, newState: newState, forced: false)
                    {
                        fresh = true
                    }
                    continue
                }
                candidateStart = candidates.count
                collectPendingCandidates(windowNs: entryNs[Int(entry)])
                candidateCount = candidates.count - candidateStart
                candidateNext = 0
                inPendingPhase = true
            }
            if candidateNext < candidateCount {
                let pendingClass = candidates[candidateStart + candidateNext]
                candidateNext += 1
                if pushPending(
                    pendingClass, candidateStart: candidateStart, candidateCount: candidateCount, candidateNext: candidateNext)
                {
                    fresh = true
                }
                continue
            }
            guard backtrack(&cursor, &inPendingPhase, &candidateStart, &candidateCount, &candidateNext) else {
                return .violation(report())
            }
        }
        return .linearizable
    }

    /// At a node reached through an indeterminate write: the state before it. Only an op that
    /// needs the write (does not fit in that state) may follow it; any other could go first.
    private var constraint: RegisterState? {
        guard let last = stack.last, last.pendingClass >= 0 else { return nil }
        return last.previous
    }

    private func fits(_ op: ModelOp, _ constraint: RegisterState?) -> Bool {
        guard let constraint else { return false }
        return op.apply(to: constraint) != nil
    }

    /// A callable definite op that leaves the state as it is (and may go next), as a call entry.
    private func unchangingCandidate() -> Int32? {
        let constraint = constraint
        var entry = next[Int(head)]
        while entry != head, isCall(entry) {
            let op = model(definite: entry >> 1)
            if op.apply(to: state) == state, !fits(op, constraint) { return entry }
            entry = next[Int(entry)]
        }
        return nil
    }

    /// Appends to `candidates` the classes whose earliest unused member is invoked by
    /// `windowNs` and is *needed* next: it enables a callable definite op that fails in the
    /// current state, directly or through a chain of indeterminate ops each enabling the next.
    /// (In a linearization, an indeterminate write followed by an op that does not need it can
    /// move after that op, or be dropped if that op overwrites it.)
    private mutating func collectPendingCandidates(windowNs: UInt64) {
        guard history.classCount > 0 else { return }
        window.removeAll(keepingCapacity: true)
        var entry = next[Int(head)]
        while entry != head, isCall(entry) {
            window.append(model(definite: entry >> 1))
            entry = next[Int(entry)]
        }
        heads.removeAll(keepingCapacity: true)
        conditionalHeads.removeAll(keepingCapacity: true)
        for pendingClass in 0..<history.classCount {
            let first = history.classStart[pendingClass]
            guard history.memberInvokeNs[first] <= windowNs else { break }
            let member = first + classUsed[pendingClass]
            guard member < history.classStart[pendingClass + 1], history.memberInvokeNs[member] <= windowNs else { continue }
            if history.classEffect[pendingClass].kind != .put { conditionalHeads.append(Int32(pendingClass)) }
            if history.classEffect[pendingClass].apply(to: state) != nil { heads.append(Int32(pendingClass)) }
        }
        let constraint = constraint
        // A write whose value no remaining get returns is as good as any other such write of
        // the same kind and ifVersion: try one of them.
        var anonymousPutSeen = false
        anonymousCasSeen.removeAll(keepingCapacity: true)
        continuations.removeAll(keepingCapacity: true)
        // Most recently invoked first (see the type's comment).
        for pendingClass in heads.reversed() {
            let op = history.classEffect[Int(pendingClass)]
            if fits(op, constraint) { continue }
            if op.kind != .delete, op.value == RegisterState.unread || readersLeft[Int(op.value)] == 0 {
                if op.kind == .put {
                    if anonymousPutSeen { continue }
                    anonymousPutSeen = true
                } else {
                    if anonymousCasSeen.contains(op.ifVersion) { continue }
                    anonymousCasSeen.append(op.ifVersion)
                }
            }
            let after = op.apply(to: state)!
            if enablesInWindow(before: state, after: after) {
                candidates.append(pendingClass)
                continue
            }
            // Whether a chain continues depends on the state's presence and bound, not on the
            // value (only gets look at it): remember the answers for this node.
            let shape = (after.isAbsent, after.version)
            let continues: Bool
            if let known = continuations.first(where: { $0.isAbsent == shape.0 && $0.version == shape.1 }) {
                continues = known.continues
            } else {
                chain.removeAll(keepingCapacity: true)
                chain.append(pendingClass)
                continues = continuesChain(before: state, after: after)
                continuations.append((shape.0, shape.1, continues))
            }
            if continues { candidates.append(pendingClass) }
        }
    }

    /// Whether a callable definite op fails in `before` and fits in `after`.
    private func enablesInWindow(before: RegisterState, after: RegisterState) -> Bool {
        window.contains { $0.apply(to: after) != nil && $0.apply(to: before) == nil }
    }

    /// Whether, after the indeterminate ops in `chain` took the register from `before` to
    /// `after`, another one can follow (failing in `before`, fitting in `after`) and enable a
    /// callable definite op, directly or through more of them. A class appears at most once
    /// in a useful chain.
    private mutating func continuesChain(before: RegisterState, after: RegisterState) -> Bool {
        // Puts never fail, so only cas and delete can continue a chain.
        for pendingClass in conditionalHeads {
            let op = history.classEffect[Int(pendingClass)]
            guard let next = op.apply(to: after), op.apply(to: before) == nil, !chain.contains(pendingClass) else { continue }
            if enablesInWindow(before: after, after: next) { return true }
            chain.append(pendingClass)
            let found = continuesChain(before: after, after: next)
            chain.removeLast()
            if found { return true }
        }
        return false
    }

    /// Linearizes definite op `number` unless the resulting configuration is known to fail.
    private mutating func push(definite number: Int32, entry: Int32, newState: RegisterState, forced: Bool) -> Bool {
        let word = Int(number) >> 6
        let bit = UInt64(1) << (UInt64(number) & 63)
        linearized[word] |= bit
        let hash = linearizedHash ^ zobrist[Int(number)]
        let key = SearchCache.key(definite: linearized, definiteHash: hash, state: newState)
        if cache.isDominated(key, pending: used, bound: ModelOp.bound(newState)) {
            linearized[word] &= ~bit
            return false
        }
        linearizedHash = hash
        linearizedCount += 1
        let opIndex = history.definite[Int(number)]
        if let value = readValue(definite: number) { readersLeft[Int(value)] -= 1 }
        stack.append(
            Frame(
                op: opIndex, pendingClass: -1, previous: state, entry: entry, candidateStart: 0, candidateCount: 0,
                candidateNext: 0, candidatesCount: Int32(candidates.count), inPendingPhase: false, forced: forced))
        path.append(opIndex)
        state = newState
        lift(number)
        return true
    }

    /// Linearizes the earliest unused member of an indeterminate class, unless the resulting
    /// configuration is known to fail.
    private mutating func pushPending(_ pendingClass: Int32, candidateStart: Int, candidateCount: Int, candidateNext: Int) -> Bool {
        let classIndex = Int(pendingClass)
        let bitIndex = history.classStart[classIndex] + classUsed[classIndex]
        let opIndex = history.members[bitIndex]
        guard let newState = history.classEffect[classIndex].apply(to: state) else { return false }
        let bit = UInt64(1) << UInt64(bitIndex & 63)
        used[bitIndex >> 6] |= bit
        let key = SearchCache.key(definite: linearized, definiteHash: linearizedHash, state: newState)
        if cache.isDominated(key, pending: used, bound: ModelOp.bound(newState)) {
            used[bitIndex >> 6] &= ~bit
            return false
        }
        classUsed[classIndex] += 1
        stack.append(
            Frame(
                op: opIndex, pendingClass: pendingClass, previous: state, entry: -1, candidateStart: Int32(candidateStart),
                candidateCount: Int32(candidateCount), candidateNext: Int32(candidateNext),
                candidatesCount: Int32(candidates.count), inPendingPhase: true, forced: false))
        path.append(opIndex)
        state = newState
        return true
    }

    /// Records the current configuration as failed (unless it was searched under a
    /// constraint) and returns to the parent node (further up while the node's only child was
    /// forced). False when the root fails.
    private mutating func backtrack(
        _ cursor: inout Int32, _ inPendingPhase: inout Bool, _ candidateStart: inout Int, _ candidateCount: inout Int,
        _ candidateNext: inout Int
    ) -> Bool {
        while let frame = stack.popLast() {
            // A node reached through an indeterminate write was searched under its constraint:
            // its failure says nothing about other ways to reach it.
            if frame.pendingClass < 0 {
                cache.insert(
                    SearchCache.key(definite: linearized, definiteHash: linearizedHash, state: state), pending: used,
                    bound: ModelOp.bound(state))
            }
            path.removeLast()
            state = frame.previous
            candidates.removeSubrange(Int(frame.candidatesCount)...)
            if frame.pendingClass < 0 {
                let number = frame.entry >> 1
                if let value = readValue(definite: number) { readersLeft[Int(value)] += 1 }
                unlift(number)
                linearized[Int(number) >> 6] &= ~(UInt64(1) << (UInt64(number) & 63))
                linearizedHash ^= zobrist[Int(number)]
                linearizedCount -= 1
            } else {
                let classIndex = Int(frame.pendingClass)
                classUsed[classIndex] -= 1
                let bitIndex = history.classStart[classIndex] + classUsed[classIndex]
                used[bitIndex >> 6] &= ~(UInt64(1) << UInt64(bitIndex & 63))
            }
            if frame.forced { continue }
            inPendingPhase = frame.inPendingPhase
            if inPendingPhase {
                candidateStart = Int(frame.candidateStart)
                candidateCount = Int(frame.candidateCount)
                candidateNext = Int(frame.candidateNext)
            } else {
                cursor = next[Int(frame.entry)]
            }
            return true
        }
        return false
    }

    /// Removes definite op `number`'s call and return entries (dancing links).
    private mutating func lift(_ number: Int32) {
        remove(2 * number)
        remove(2 * number + 1)
    }

    private mutating func remove(_ entry: Int32) {
        next[Int(prev[Int(entry)])] = next[Int(entry)]
        prev[Int(next[Int(entry)])] = prev[Int(entry)]
    }

    private mutating func restore(_ entry: Int32) {
        next[Int(prev[Int(entry)])] = entry
        prev[Int(next[Int(entry)])] = entry
    }

    /// Puts back what `lift` removed, in reverse order.
    private mutating func unlift(_ number: Int32) {
        restore(2 * number + 1)
        restore(2 * number)
    }
}
