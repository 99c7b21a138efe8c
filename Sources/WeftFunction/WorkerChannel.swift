import Synchronization
import WeftClient
import WeftCore
import WeftWire

/// The runtime loop's view of its worker (the control plane): ask for work, report results,
/// invoke other functions. `WeftClient` over the inherited socket is the real one; tests of the
/// loop can put a mock behind it.
public protocol WorkerChannel: Sendable {
    /// The next invocation for this instance (waits until there is one).
    func next() async throws(WeftError) -> FunctionInvocation
    /// Reports an invocation's output, or the error it failed with.
    func result(invocationID: String, output: [UInt8], error: WeftError?) async throws(WeftError)
    /// Runs a function and waits for it: its invocation id and output.
    func invoke(_ function: String, _ input: [UInt8]) async throws(WeftError) -> (invocationID: String, output: [UInt8])
    /// Sends an invocation at once and returns what will hold its id and output (the default
    /// runs `invoke` in a task).
    func start(_ function: String, _ input: [UInt8]) -> PendingInvocation
    /// Queues an invocation; its id.
    func invokeAsync(_ function: String, _ input: [UInt8]) async throws(WeftError) -> String
    /// Returns when the connection to the worker has ended.
    func closed() async
}

extension WorkerChannel {
    public func start(_ function: String, _ input: [UInt8]) -> PendingInvocation {
        PendingInvocation.running { () async throws(WeftError) in try await invoke(function, input) }
    }
}

/// An invocation on its way: its result once the worker answers. Awaiting it resumes the
/// waiter straight from the answer (no task in between: a chained call is a hop shorter).
public final class PendingInvocation: Sendable {
    public typealias Outcome = Result<(invocationID: String, output: [UInt8]), WeftError>
    private enum State {
        case waiting([CheckedContinuation<Outcome, Never>])
        case done(Outcome)
    }
    private let state = Mutex<State>(.waiting([]))

    public init() {}

    /// One completed by `body`, run in a task.
    public static func running(
        _ body: @escaping @Sendable () async throws(WeftError) -> (invocationID: String, output: [UInt8])
    ) -> PendingInvocation {
        let pending = PendingInvocation()
        Task {
            do throws(WeftError) {
                pending.complete(.success(try await body()))
            } catch {
                pending.complete(.failure(error))
            }
        }
        return pending
    }

    /// Delivers the result (the first one counts).
    public func complete(_ outcome: Outcome) {
        let waiters = state.withLock { s -> [CheckedContinuation<Outcome, Never>] in
            guard case .waiting(let waiters) = s else { return [] }
            s = .done(outcome)
            return waiters
        }
        for w in waiters { w.resume(returning: outcome) }
    }

    public var outcome: Outcome {
        get async {
            await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
                let done = state.withLock { s -> Outcome? in
                    switch s {
                    case .done(let outcome): return outcome
                    case .waiting(var waiters):
                        waiters.append(c)
                        s = .waiting(waiters)
                        return nil
                    }
                }
                if let done { c.resume(returning: done) }
            }
        }
    }
}

/// The worker channel over a client connected to the worker.
public struct ClientWorkerChannel: WorkerChannel {
    public let client: WeftClient
    private let onClosed: @Sendable () async -> Void

    /// `closed` waits for `onClosed` (e.g. the transport's end).
    public init(client: WeftClient, closed: @escaping @Sendable () async -> Void) {
        self.client = client
        self.onClosed = closed
    }

    public func next() async throws(WeftError) -> FunctionInvocation {
        try await client.functionNext()
    }

    public func result(invocationID: String, output: [UInt8], error: WeftError?) async throws(WeftError) {
        try await client.functionResult(invocationID: invocationID, output: output, error: error)
    }

    public func invoke(_ function: String, _ input: [UInt8]) async throws(WeftError) -> (invocationID: String, output: [UInt8]) {
        try await client.invokeWithID(function, input)
    }

    public func start(_ function: String, _ input: [UInt8]) -> PendingInvocation {
        guard client.isConnected else {
            return PendingInvocation.running { () async throws(WeftError) in try await invoke(function, input) }
        }
        let pending = PendingInvocation()
        // The worker bounds the invocation by its deadline; the client waits a day at most.
        client.submit(.functionInvoke(function: function, input: input, async: false), epoch: 0, timeoutMs: 86_400_000) { result in
            switch result {
            case .success(.functionOutput(let id, let output)): pending.complete(.success((id, output)))
            case .success(.state(.failure(let error))): pending.complete(.failure(error))
            case .success: pending.complete(.failure(WeftError(.malformedRequest, "unexpected answer to an invocation")))
            case .failure(let error): pending.complete(.failure(error))
            }
        }
        return pending
    }

    public func invokeAsync(_ function: String, _ input: [UInt8]) async throws(WeftError) -> String {
        try await client.invokeAsync(function, input)
    }

    public func closed() async {
        await onClosed()
    }
}
