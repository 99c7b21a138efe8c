import Testing
import WeftTestKit

/// Histories of a simulated linearizable store must check as linearizable; with one read
/// made stale, or one acknowledged write's effect dropped, they must not. Each test prints
/// its seed on failure; put it in `seeds` to replay.
@Suite struct RandomHistoryTests {
    /// Seeds to run besides random ones (for replaying a failure).
    static let seeds: [UInt64] = [1, 2, 3]

    static func someSeeds(_ count: Int) -> [UInt64] {
        seeds + (0..<count).map { _ in UInt64.random(in: 0...UInt64.max) }
    }

    static let small = RegisterSimulation.Config(processes: 4, keys: 2, ops: 200, pendingRate: 0.1, deleteRate: 0.05)

    // The simulations and checks are CPU-bound for seconds: they run on a thread of their own
    // (`onOwnThread`), not on the few threads every async test in the process shares, and the
    // test asserts on what they return.

    @Test func simulatedHistoriesAreLinearizable() async throws {
        let checked = try await onOwnThread {
            Self.someSeeds(30).map { seed in (seed, LinearizabilityChecker.check(RegisterSimulation.run(seed: seed, Self.small), budget: .seconds(20))) }
        }
        for (seed, result) in checked { #expect(result.isLinearizable, "seed \(seed): \(result)") }
    }

    @Test func manyIndeterminateOpsAreLinearizable() async throws {
        var config = Self.small
        config.pendingRate = 0.3
        config.processes = 6
        let checked = try await onOwnThread { [config] in
            Self.someSeeds(10).map { seed in (seed, LinearizabilityChecker.check(RegisterSimulation.run(seed: seed, config), budget: .seconds(20))) }
        }
        for (seed, result) in checked { #expect(result.isLinearizable, "seed \(seed): \(result)") }
    }

    @Test func staleReadIsFound() async throws {
        let checked = try await onOwnThread {
            Self.someSeeds(30).map { seed -> (UInt64, (index: Int, stale: RegisterOp.Result, key: String, result: CheckResult)?) in
                let history = RegisterSimulation.run(seed: seed, Self.small)
                var random = TestRandom(seed: seed)
                guard let (index, stale) = Self.staleRead(in: history, &random) else { return (seed, nil) }
                var corrupted = history
                corrupted[index].result = stale
                return (seed, (index, stale, history[index].key, LinearizabilityChecker.check(corrupted, budget: .seconds(20))))
            }
        }
        for (seed, found) in checked {
            guard let found else {
                Issue.record("seed \(seed): no read to corrupt")
                continue
            }
            #expect(found.result.violation?.key == found.key, "seed \(seed), read #\(found.index) -> \(found.stale): \(found.result)")
        }
    }

    @Test func droppedWriteIsFound() async throws {
        let checked = try await onOwnThread {
            Self.someSeeds(30).map { seed -> (UInt64, (write: Int, key: String, result: CheckResult)?) in
                guard let (history, write) = Self.droppedWrite(seed: seed, Self.small) else { return (seed, nil) }
                return (seed, (write, history[write].key, LinearizabilityChecker.check(history, budget: .seconds(20))))
            }
        }
        for (seed, found) in checked {
            guard let found else {
                Issue.record("seed \(seed): no dropped write shows")
                continue
            }
            #expect(found.result.violation?.key == found.key, "seed \(seed), dropped #\(found.write): \(found.result)")
        }
    }

    /// A definite read to make stale, and the stale result: the value of a write that was
    /// followed, before the read began, by another acknowledged write.
    static func staleRead(in history: [RegisterOp], _ random: inout TestRandom) -> (Int, RegisterOp.Result)? {
        let reads = history.indices.filter { history[$0].kind == .get && history[$0].isDefinite }
        for _ in 0..<100 {
            let read = reads[Int(random.next(upTo: UInt64(reads.count)))]
            let writes = history.indices.filter {
                history[$0].key == history[read].key && $0 != read && Self.writtenVersion(history[$0]) != nil
            }
            // The latest-completing write before the read, then one completed before that one began.
            guard let later = writes.filter({ history[$0].completeNs! < history[read].invokeNs }).max(by: { history[$0].completeNs! < history[$1].completeNs! }),
                let earlier = writes.last(where: { history[$0].completeNs! < history[later].invokeNs })
            else { continue }
            guard case .put(let value) = history[earlier].kind else {
                if case .cas(let value, _) = history[earlier].kind {
                    return (read, .get(value: value, version: writtenVersion(history[earlier])!))
                }
                continue
            }
            return (read, .get(value: value, version: writtenVersion(history[earlier])!))
        }
        return nil
    }

    /// Simulates with one acknowledged put's effect dropped, trying puts until one whose loss a
    /// later read on its key shows: a read begun after the put completed that returns a lower version
    /// (versions only grow, so that is a violation).
    static func droppedWrite(seed: UInt64, _ config: RegisterSimulation.Config) -> ([RegisterOp], Int)? {
        let clean = RegisterSimulation.run(seed: seed, config)
        // From a random point on, so the loss is not always found near the start.
        let start = Int(seed % UInt64(clean.count))
        for candidate in Array(start..<clean.count) + Array(0..<start) where clean[candidate].isDefinite {
            guard case .put = clean[candidate].kind else { continue }
            var dropping = config
            dropping.dropEffectOf = candidate
            let history = RegisterSimulation.run(seed: seed, dropping)
            guard let version = writtenVersion(history[candidate]), let completeNs = history[candidate].completeNs else { continue }
            let shows = history.contains { op in
                guard op.key == history[candidate].key, op.invokeNs > completeNs, case .get(_?, let read) = op.result else { return false }
                return read < version
            }
            if shows { return (history, candidate) }
        }
        return nil
    }

    static func writtenVersion(_ op: RegisterOp) -> UInt64? {
        if case .written(let version) = op.result { return version }
        return nil
    }
}
