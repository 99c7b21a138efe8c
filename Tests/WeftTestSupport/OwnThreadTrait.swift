import Testing
import WeftTestKit

/// Runs each test of a suite (or one test) on a thread of its own instead of the cooperative
/// pool: for tests whose synchronous code blocks (LMDB commits with fsync, waiting for a child
/// process, polling a fabric completion queue). The pool has one thread per core, so on a
/// 2-core machine two such tests stall every other test in the process, and timing-bound
/// tests elsewhere fail.
public struct OwnThreadTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // The suite itself (no test case): its tests each get their own thread.
        guard testCase != nil else { return try await function() }
        let executor = ThreadTaskExecutor(name: "test: \(test.name)".prefix(15).description)
        defer { executor.stop() }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThreadTrait {
    /// See `OwnThreadTrait`.
    public static var ownThread: Self { Self() }
}
