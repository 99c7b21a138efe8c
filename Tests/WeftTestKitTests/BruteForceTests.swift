import Testing
import WeftTestKit
import WeftTestSupport

/// The checker against an exhaustive search over every order of small histories (no memo,
/// no pruning, its own model on bytes): simulated ones, half of them with results tampered
/// with, some with cas versions scrambled or values repeated. On threads of their own
/// (`.ownThread`): each case is CPU-bound for seconds, and on the two threads every async test
/// of the process shares (on two cores) the pair held up every other test for ~9 s in CI,
/// long enough for etcd sessions with 1 s leases to lose them.
@Suite(.ownThread) struct BruteForceTests {
    @Test(arguments: [
        RegisterSimulation.Config(processes: 3, keys: 1, ops: 8, pendingRate: 0.3, deleteRate: 0.1),
        RegisterSimulation.Config(processes: 4, keys: 1, ops: 9, pendingRate: 0.5, deleteRate: 0.2),
    ])
    func checkerAgreesWithExhaustiveSearch(_ config: RegisterSimulation.Config) {
        var counts = (linearizable: 0, violations: 0)
        for _ in 0..<1000 {
            let seed = UInt64.random(in: 0...UInt64.max)
            var random = TestRandom(seed: seed)
            var history = RegisterSimulation.run(seed: seed, config)
            if random.unit() < 0.5 { Self.tamper(&history, &random) }
            if random.unit() < 0.3 { Self.scrambleIfVersions(&history, &random) }
            if random.unit() < 0.3 { Self.squashValues(&history) }
            let expected = ExhaustiveChecker(history: history).isLinearizable()
            let result = LinearizabilityChecker.check(history, budget: .seconds(10))
            #expect(
                result.isLinearizable == expected && (result.violation != nil) == !expected,
                "seed \(seed): \(result)\n\(history.map(\.description).joined(separator: "\n"))")
            if expected { counts.linearizable += 1 } else { counts.violations += 1 }
        }
        #expect(counts.linearizable > 100 && counts.violations > 100, "\(counts)")
    }

    /// Changes one or two results to nearby ones: another version, another value seen, a
    /// flipped cas outcome, an absent read.
    static func tamper(_ history: inout [RegisterOp], _ random: inout TestRandom) {
        let values = history.compactMap { op -> [UInt8]? in
            switch op.kind {
            case .put(let value), .cas(let value, _): value
            default: nil
            }
        }
        for _ in 0..<(1 + Int(random.next(upTo: 2))) {
            let index = Int(random.next(upTo: UInt64(history.count)))
            guard history[index].isDefinite else { continue }
            let delta = random.next(upTo: 3)
            switch history[index].result {
            case .get(let value, let version):
                switch random.next(upTo: 3) {
                case 0: history[index].result = .get(value: value, version: version &+ delta &- 1)
                case 1 where !values.isEmpty:
                    history[index].result = .get(value: values[Int(random.next(upTo: UInt64(values.count)))], version: version)
                default: history[index].result = .absent
                }
            case .written(let version):
                history[index].result = random.unit() < 0.5 ? .written(version: version &+ delta &- 1) : .mismatch
            case .mismatch:
                history[index].result = .written(version: 1 + random.next(upTo: 8))
            case .deleted:
                history[index].result = .notFound
            case .notFound:
                history[index].result = .deleted
            case .pending:
                break
            }
        }
    }
}

extension BruteForceTests {
    /// Gives some cas ops (all indeterminate ones, a few definite ones) an ifVersion taken
    /// from the history's versions, so indeterminate cas ops chain and match unknown versions.
    static func scrambleIfVersions(_ history: inout [RegisterOp], _ random: inout TestRandom) {
        let versions: [UInt64] = [0] + history.compactMap { op in
            if case .written(let version) = op.result { return version }
            return nil
        }
        for index in history.indices where !history[index].isDefinite || random.unit() < 0.2 {
            if case .cas(let value, _) = history[index].kind {
                history[index].kind = .cas(value, ifVersion: versions[Int(random.next(upTo: UInt64(versions.count)))])
            }
        }
    }

    /// Maps every value to one of three, so values repeat.
    static func squashValues(_ history: inout [RegisterOp]) {
        func squash(_ value: [UInt8]) -> [UInt8] { [value.last.map { $0 % 3 } ?? 0] }
        for index in history.indices {
            switch history[index].kind {
            case .put(let value): history[index].kind = .put(squash(value))
            case .cas(let value, let ifVersion): history[index].kind = .cas(squash(value), ifVersion: ifVersion)
            case .get, .delete: break
            }
            if case .get(let value?, let version) = history[index].result {
                history[index].result = .get(value: squash(value), version: version)
            }
        }
    }
}

/// Tries every order of a one-key history: a definite op may go next if no other definite op
/// still waiting completed before it was invoked; an indeterminate write may go next once
/// (if invoked no later than every waiting definite op completed), or never.
struct ExhaustiveChecker {
    struct State {
        var value: [UInt8]?
        /// Present: the version if `known`, else a bound it is above. Absent: the next
        /// version is above it.
        var version: UInt64
        var known: Bool
    }

    let history: [RegisterOp]

    func isLinearizable() -> Bool {
        let ops = history.filter { !($0.kind == .get && !$0.isDefinite) }
        var done = [Bool](repeating: false, count: ops.count)
        return search(ops, &done, State(value: nil, version: 0, known: false))
    }

    private func search(_ ops: [RegisterOp], _ done: inout [Bool], _ state: State) -> Bool {
        let waiting = ops.indices.filter { !done[$0] && ops[$0].isDefinite }
        if waiting.isEmpty { return true }
        for index in ops.indices where !done[index] {
            let mayGo = waiting.allSatisfy { $0 == index || ops[index].invokeNs <= ops[$0].completeNs! }
            guard mayGo, let after = Self.apply(ops[index], state) else { continue }
            done[index] = true
            let found = search(ops, &done, after)
            done[index] = false
            if found { return true }
        }
        return false
    }

    /// Above: the version the next write must exceed.
    static func nextAbove(_ state: State) -> UInt64 {
        state.value == nil || state.known || state.version == .max ? state.version : state.version + 1
    }

    static func versionMayBe(_ expected: UInt64, _ state: State) -> Bool {
        if expected == 0 { return state.value == nil }
        guard state.value != nil else { return false }
        return state.known ? state.version == expected : expected > state.version
    }

    static func apply(_ op: RegisterOp, _ state: State) -> State? {
        switch (op.kind, op.result) {
        case (.get, .get(nil, 0)):
            return state.value == nil ? state : nil
        case (.get, .get(let value?, let version)):
            guard version > 0, state.value == value else { return nil }
            if state.known { return state.version == version ? state : nil }
            return version > state.version ? State(value: value, version: version, known: true) : nil
        case (.put(let value), .written(let version)):
            return version > nextAbove(state) ? State(value: value, version: version, known: true) : nil
        case (.put(let value), .pending):
            return State(value: value, version: nextAbove(state), known: false)
        case (.cas(let value, let expected), .written(let version)):
            guard versionMayBe(expected, state), version > (expected == 0 ? state.version : expected) else { return nil }
            return State(value: value, version: version, known: true)
        case (.cas(let value, let expected), .pending):
            guard versionMayBe(expected, state) else { return nil }
            return State(value: value, version: expected == 0 ? state.version : expected, known: false)
        case (.cas(_, let expected), .mismatch):
            // Against an unknown version any mismatch is allowed (as in the checker).
            if expected == 0 { return state.value == nil ? nil : state }
            return state.value != nil && state.known && state.version == expected ? nil : state
        case (.delete, .deleted), (.delete, .pending):
            return state.value == nil ? nil : State(value: nil, version: nextAbove(state), known: false)
        case (.delete, .notFound):
            return state.value == nil ? state : nil
        default:
            return nil
        }
    }
}
