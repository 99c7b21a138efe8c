import Testing
import WeftTestKit

/// The size the checker is meant for: 5 keys × 2,000 ops, 8 processes, 5% indeterminate; and
/// a harsher mix, so a blowup on indeterminate ops shows.
@Suite struct PerformanceTests {
    static let budget = Duration.seconds(30)

    static let configs = [
        RegisterSimulation.Config(processes: 8, keys: 5, ops: 10_000, pendingRate: 0.05, deleteRate: 0.01),
        RegisterSimulation.Config(processes: 16, keys: 5, ops: 10_000, pendingRate: 0.3, deleteRate: 0.02),
    ]

    @Test(arguments: configs)
    func largeLinearizableHistory(_ config: RegisterSimulation.Config) async throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        let history = try await onOwnThread { RegisterSimulation.run(seed: seed, config) }
        let (result, elapsed) = try await Self.timedCheck(history)
        print("\(config.testDescription): checked in \(elapsed): \(result)")
        #expect(result.isLinearizable, "seed \(seed): \(result)")
        #expect(elapsed < Self.budget)
    }

    @Test(arguments: configs)
    func largeHistoryWithAStaleRead(_ config: RegisterSimulation.Config) async throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var history = try await onOwnThread { RegisterSimulation.run(seed: seed, config) }
        var random = TestRandom(seed: seed)
        let (index, stale) = try #require(RandomHistoryTests.staleRead(in: history, &random), "seed \(seed)")
        history[index].result = stale
        let (result, elapsed) = try await Self.timedCheck(history)
        print("\(config.testDescription): stale read #\(index) found in \(elapsed)")
        #expect(result.violation?.key == history[index].key, "seed \(seed), read #\(index): \(result)")
    }

    @Test(arguments: configs)
    func largeHistoryWithADroppedWrite(_ config: RegisterSimulation.Config) async throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        let dropped = try await onOwnThread { RandomHistoryTests.droppedWrite(seed: seed, config) }
        let (history, write) = try #require(dropped, "seed \(seed)")
        let (result, elapsed) = try await Self.timedCheck(history)
        print("\(config.testDescription): dropped write #\(write) found in \(elapsed)")
        #expect(result.violation?.key == history[write].key, "seed \(seed), write #\(write): \(result)")
    }

    /// Checks on a thread of its own (it is CPU-bound for seconds).
    static func timedCheck(_ history: [RegisterOp]) async throws -> (CheckResult, Duration) {
        try await onOwnThread {
            let start = ContinuousClock.now
            let result = LinearizabilityChecker.check(history, budget: budget)
            return (result, ContinuousClock.now - start)
        }
    }
}
