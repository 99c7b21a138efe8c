#if canImport(Glibc)
import Glibc
#endif
import Logging
import WeftClient
import WeftCore
import WeftWire

/// What a handler gets with each invocation: who it is, until when it may run, the state layer,
/// and the means to call other functions.
public struct FunctionContext: Sendable {
    public let invocationID: String
    /// The function's name and deployed version.
    public let function: String
    public let version: UInt64
    /// When the worker kills the instance if no result has arrived (ms since the Unix epoch).
    public let deadlineUnixMs: UInt64
    /// The same deadline on the continuous clock.
    public let deadline: ContinuousClock.Instant
    /// The full state API, served by the worker (through its cache, inside the tenant's namespace).
    public let state: WeftClient
    /// Logs to stderr (the worker keeps its tail in the invocation record); carries the
    /// invocation id as metadata.
    public let logger: Logger
    /// Invocations `map` runs at once.
    public var mapConcurrencyMax: Int = 64

    let channel: any WorkerChannel

    public init(invocation: FunctionInvocation, state: WeftClient, channel: any WorkerChannel, logger: Logger) {
        self.invocationID = invocation.invocationID
        self.function = invocation.function
        self.version = invocation.version
        self.deadlineUnixMs = invocation.deadlineUnixMs
        let leftMs = Int64(clamping: invocation.deadlineUnixMs) - Self.nowUnixMs()
        self.deadline = ContinuousClock.now.advanced(by: .milliseconds(max(0, leftMs)))
        self.state = state
        self.channel = channel
        var logger = logger
        logger[metadataKey: "invocation"] = "\(invocation.invocationID)"
        self.logger = logger
    }

    /// Time left before the deadline.
    public var remaining: Duration { max(.zero, ContinuousClock.now.duration(to: deadline)) }

    /// Starts another function at once; await the handle's `output`.
    public func invoke(_ function: String, _ input: [UInt8]) -> FunctionHandle {
        FunctionHandle(function: function, pending: channel.start(function, input))
    }

    /// Queues another function without waiting for it; its invocation id.
    public func invokeAsync(_ function: String, _ input: [UInt8]) async throws(WeftError) -> String {
        try await channel.invokeAsync(function, input)
    }

    /// Runs `function` once per input, concurrently (at most `mapConcurrencyMax` at a time), and
    /// returns the outputs in the order of the inputs. The first failure fails the whole map.
    public func map(_ function: String, _ inputs: [[UInt8]]) async throws(WeftError) -> [[UInt8]] {
        let channel = self.channel
        let window = max(1, mapConcurrencyMax)
        // No local function capturing the group and the counter here: that shape was
        // miscompiled by Swift 6.3.1 in release builds (an out-of-range trap in outputs[i]).
        let outcome: Result<[[UInt8]], WeftError> = await withTaskGroup(of: (Int, Result<[UInt8], WeftError>).self) { group in
            var outputs = [[UInt8]](repeating: [], count: inputs.count)
            var next = 0
            while next < min(window, inputs.count) {
                group.addTask(operation: Self.mapTask(channel, function, index: next, input: inputs[next]))
                next += 1
            }
            while let (i, result) = await group.next() {
                switch result {
                case .success(let output): outputs[i] = output
                case .failure(let error):
                    group.cancelAll()
                    return .failure(error)
                }
                if next < inputs.count {
                    group.addTask(operation: Self.mapTask(channel, function, index: next, input: inputs[next]))
                    next += 1
                }
            }
            return .success(outputs)
        }
        return try outcome.get()
    }

    /// One invocation of a map, tagged with its input's index.
    static func mapTask(_ channel: any WorkerChannel, _ function: String, index: Int, input: [UInt8])
        -> @Sendable () async -> (Int, Result<[UInt8], WeftError>)
    {
        {
            do throws(WeftError) {
                return (index, .success(try await channel.invoke(function, input).output))
            } catch {
                return (index, .failure(error))
            }
        }
    }

    static func nowUnixMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// A running invocation of another function.
public struct FunctionHandle: Sendable {
    public let function: String
    private let pending: PendingInvocation

    init(function: String, pending: PendingInvocation) {
        self.function = function
        self.pending = pending
    }

    /// The function's output once it has finished, or its failure (with its code).
    public var output: [UInt8] {
        get async throws(WeftError) { try await pending.outcome.get().output }
    }

    /// The invocation's id (known once it has finished).
    public var invocationID: String {
        get async throws(WeftError) { try await pending.outcome.get().invocationID }
    }
}
