import Logging
import Synchronization
import WeftClient
import WeftCore
import WeftWire

/// The runtime loop of an instance: `concurrency` loops, each asking the worker for an
/// invocation, running the handler and reporting its outcome, until the worker drains the
/// instance or the connection to it ends.
public struct FunctionRuntime: Sendable {
    public let handler: any ByteHandler
    public let channel: any WorkerChannel
    /// The client the handler's `context.state` uses (over the same connection as `channel`
    /// for a real instance).
    public let state: WeftClient
    public let concurrency: Int
    public let logger: Logger
    /// Where the loops and their handlers run (nil: Swift's global pool). A real instance runs
    /// them on its connection's event loop (see `LoopExecutor`), so its handlers share that
    /// thread: a compute-heavy function should keep its concurrency per instance at 1 and let
    /// the worker start more instances (each its own process with its own loop).
    public let executor: (any TaskExecutor)?

    public init(
        handler: any ByteHandler, channel: any WorkerChannel, state: WeftClient, concurrency: Int = 1, logger: Logger,
        executor: (any TaskExecutor)? = nil
    ) {
        precondition(concurrency >= 1, "concurrency must be at least 1")
        self.handler = handler
        self.channel = channel
        self.state = state
        self.concurrency = concurrency
        self.logger = logger
        self.executor = executor
    }

    /// How a loop ended.
    private enum End: Sendable {
        /// The worker told it to stop (`cancelled`): a graceful drain.
        case drained
        case failed(WeftError)
    }

    /// Runs until every loop has been drained (returns), or until the connection to the worker
    /// ends or breaks (throws, without waiting for handlers still running: there is nobody left
    /// to take their results).
    public func run() async throws(WeftError) {
        let (ends, continuation) = AsyncStream<End>.makeStream()
        var tasks: [Task<Void, Never>] = []
        for _ in 0..<concurrency {
            tasks.append(Task(executorPreference: executor) { continuation.yield(await loop()) })
        }
        let channel = self.channel
        tasks.append(Task {
            await channel.closed()
            continuation.yield(.failed(WeftError(.unavailable, "the worker closed the connection")))
        })
        defer { for t in tasks { t.cancel() } }
        var drained = 0
        for await end in ends {
            switch end {
            case .drained:
                drained += 1
                if drained == concurrency { return }
            case .failed(let error):
                throw error
            }
        }
    }

    /// One loop: next → handler → result.
    private func loop() async -> End {
        while true {
            let invocation: FunctionInvocation
            do {
                invocation = try await channel.next()
            } catch {
                if error.code == .cancelled { return .drained }
                return .failed(error)
            }
            let (output, failure) = await runHandler(invocation)
            do {
                try await report(invocation.invocationID, output, failure)
            } catch {
                return .failed(error)
            }
        }
    }

    /// Runs the handler; a thrown `WeftError` keeps its code, anything else is `internalError`.
    func runHandler(_ invocation: FunctionInvocation) async -> ([UInt8], WeftError?) {
        let context = FunctionContext(invocation: invocation, state: state, channel: channel, logger: logger)
        do {
            return (try await handler.handle(invocation.input, context: context), nil)
        } catch let error as WeftError {
            return ([], error)
        } catch {
            return ([], WeftError(.internalError, "\(type(of: error)): \(error)"))
        }
    }

    /// Sends the outcome; an output the worker refuses as too large fails the invocation instead.
    private func report(_ invocationID: String, _ output: [UInt8], _ failure: WeftError?) async throws(WeftError) {
        do {
            try await channel.result(invocationID: invocationID, output: output, error: failure)
        } catch where error.code == .valueTooLarge && failure == nil {
            logger.warning("output refused by the worker", metadata: ["invocation": "\(invocationID)", "bytes": "\(output.count)"])
            try await channel.result(invocationID: invocationID, output: [], error: error)
        }
    }
}
