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
    /// Queues an invocation; its id.
    func invokeAsync(_ function: String, _ input: [UInt8]) async throws(WeftError) -> String
    /// Returns when the connection to the worker has ended.
    func closed() async
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

    public func invokeAsync(_ function: String, _ input: [UInt8]) async throws(WeftError) -> String {
        try await client.invokeAsync(function, input)
    }

    public func closed() async {
        await onClosed()
    }
}
