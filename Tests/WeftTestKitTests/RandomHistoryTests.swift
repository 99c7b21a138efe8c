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

    @Test func simulatedHistoriesAreLinearizable() {
        for seed in Self.someSeeds(30) {
            let history = RegisterSimulation.run(seed: seed, Self.small)
            let result = LinearizabilityChecker.check(history, budget: .seconds(20))
            #expect(result.isLinearizable, "seed \(seed): \(result)")
        }
    }

    @Test func manyIndeterminateOpsAreLinearizable() {
        var config = Self.small
        config.pendingRate = 0.3
        config.processes = 6
        for seed in Self.someSeeds(10) {
            let history = RegisterSimulation.run(seed: seed, config)
            let result = LinearizabilityChecker.check(history, budget: .seconds(20))
            #expect(result.isLinearizable, "seed \(seed): \(result)")
        }
    }

    @Test func staleReadIsFound() throws {
        for seed in Self.someSeeds(30) {
            let history = RegisterSimulation.run(seed: seed, Self.small)
            var random = TestRandom(seed: seed)
            guard let (index, stale) = Self.staleRead(in: history, &random) else {
                Issue.record("seed \(seed): no read to corrupt")
                continue
            }
            var corrupted = history
            corrupted[index].result = stale
            let result = LinearizabilityChecker.check(corrupted, budget: .seconds(20))
            #expect(result.violation?.key == history[index].key, "seed \(seed), read #\(index) -> \(stale): \(result)")
        }
    }

    @Test func droppedWriteIsFound() {
        for seed in Self.someSeeds(30) {
            guard let (history, write) = Self.droppedWrite(seed: seed, Self.small) else {
                Issue.record("seed \(seed): no dropped write shows")
                continue
            }
            let result = LinearizabilityChecker.check(history, budget: .seconds(20))
            #expect(result.violation?.key == history[write].key, "seed \(seed), dropped #\(write): \(result)")
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
