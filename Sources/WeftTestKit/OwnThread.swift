import Foundation

/// Runs blocking work (waiting for a child process, polling with `usleep`) on a thread of its
/// own and resumes the caller when it is done. Async tests share a cooperative pool of one
/// thread per core; a test that blocks one of them stalls every other test in the process
/// (on a 2-core machine, tests that take 50 ms alone took 35 s so, and timed-out waits failed).
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}
