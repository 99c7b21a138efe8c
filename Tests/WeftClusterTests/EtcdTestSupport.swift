import Testing
import WeftCluster
import WeftCore

/// Helpers shared by the etcd suites.
enum Etcd {
    /// The suite's server (see `.etcdServer`).
    static var server: EtcdTestServer {
        get throws {
            guard let s = EtcdTestServer.current else { throw WeftError(.internalError, "suite lacks the .etcdServer trait") }
            return s
        }
    }

    /// A client of the suite's server.
    static func client(requestTimeoutMs: Int64 = 5000) async throws -> EtcdClient {
        try await server.client(requestTimeoutMs: requestTimeoutMs)
    }

    /// Runs `body` with a new client of the suite's server, closed afterwards.
    @discardableResult
    static func withClient<T>(requestTimeoutMs: Int64 = 5000, _ body: (EtcdClient) async throws -> T) async throws -> T {
        let client = try await client(requestTimeoutMs: requestTimeoutMs)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    /// Expects `body` to throw a `WeftError` with `code`.
    static func expectError(
        _ code: WeftError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
    ) async {
        do {
            try await body()
            Issue.record("expected \(code), but it succeeded", sourceLocation: sourceLocation)
        } catch {
            #expect((error as? WeftError)?.code == code, "\(error)", sourceLocation: sourceLocation)
        }
    }

    /// The `WeftError` that `body` throws; nil if it returns.
    static func error(_ body: () async throws -> Void) async -> WeftError? {
        do {
            try await body()
            return nil
        } catch {
            return (error as? WeftError) ?? WeftError(.internalError, "not a WeftError: \(error)")
        }
    }

    /// A key prefix unique to one test, so tests sharing a server do not see each other's keys.
    static func prefix(_ name: String = #function) -> String {
        "/t/\(name.prefix(while: { $0 != "(" }))-\(UInt32.random(in: 0...UInt32.max))/"
    }

    /// Polls `condition` every 50 ms until it holds or `timeoutMs` passes; returns whether it held.
    static func eventually(timeoutMs: Int64 = 10_000, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    /// `task`'s value if it ends within `timeoutMs`, else nil (the task goes on).
    static func value<T: Sendable>(of task: Task<T, Never>, timeoutMs: Int64) async -> T? {
        let (stream, continuation) = AsyncStream<T?>.makeStream(bufferingPolicy: .bufferingOldest(1))
        let waiter = Task {
            continuation.yield(await task.value)
            continuation.finish()
        }
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(timeoutMs))
            continuation.yield(nil)
            continuation.finish()
        }
        var iterator = stream.makeAsyncIterator()
        let first = await iterator.next() ?? nil
        timer.cancel()
        _ = waiter  // ends with `task`
        return first
    }

    /// `body`'s result if it finishes within `timeoutMs`, else nil (and `body` is cancelled:
    /// it must respond to cancellation).
    static func within<T: Sendable>(_ timeoutMs: Int64, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: .milliseconds(timeoutMs))
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
    }
}
