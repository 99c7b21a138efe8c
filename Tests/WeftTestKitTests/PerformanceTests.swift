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
    func largeLinearizableHistory(_ config: RegisterSimulation.Config) {
        let seed = UInt64.random(in: 0...UInt64.max)
        let history = RegisterSimulation.run(seed: seed, config)
        let (result, elapsed) = Self.timedCheck(history)
        print("\(config.testDescription): checked in \(elapsed): \(result)")
        #expect(result.isLinearizable, "seed \(seed): \(result)")
        #expect(elapsed < Self.budget)
    }

    @Test(arguments: configs)
    func largeHistoryWithAStaleRead(_ config: RegisterSimulation.Config) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var history = RegisterSimulation.run(seed: seed, config)
        var random = TestRandom(seed: seed)
        let (index, stale) = try #require(RandomHistoryTests.staleRead(in: history, &random), "seed \(seed)")
        history[index].result = stale
        let (result, elapsed) = Self.timedCheck(history)
        print("\(config.testDescription): stale read #\(index) found in \(elapsed)")
        #expect(result.violation?.key == history[index].key, "seed \(seed), read #\(index): \(result)")
    }

    @Test(arguments: configs)
    func largeHistoryWithADroppedWrite(_ config: RegisterSimulation.Config) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        let (history, write) = try #require(RandomHistoryTests.droppedWrite(seed: seed, config), "seed \(seed)")
        let (result, elapsed) = Self.timedCheck(history)
        print("\(config.testDescription): dropped write #\(write) found in \(elapsed)")
        #expect(result.violation?.key == history[write].key, "seed \(seed), write #\(write): \(result)")
    }

    static func timedCheck(_ history: [RegisterOp]) -> (CheckResult, Duration) {
        let start = ContinuousClock.now
        let result = LinearizabilityChecker.check(history, budget: budget)
        return (result, ContinuousClock.now - start)
    }
}
