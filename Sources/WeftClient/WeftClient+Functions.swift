import WeftCore
import WeftTransport
import WeftWire

extension WeftClient {
    /// Runs a function on the node and waits for its output. A failed invocation throws its
    /// code (`timeout`, `outOfMemory`, `functionCrashed`, or the code its handler failed with).
    /// `timeoutMs` bounds the wait here; by default it is the worker's function timeout that ends
    /// a run, so the client waits as long as the connection lives.
    public func invoke(_ function: String, _ input: [UInt8], timeoutMs: Int64 = .max) async throws(WeftError) -> [UInt8] {
        try await invokeWithID(function, input, timeoutMs: timeoutMs).output
    }

    /// Like `invoke`, also returning the invocation's id (to look up its record).
    public func invokeWithID(_ function: String, _ input: [UInt8], timeoutMs: Int64 = .max) async throws(WeftError) -> (invocationID: String, output: [UInt8]) {
        switch try await send(.functionInvoke(function: function, input: input, async: false), timeoutMs: timeoutMs) {
        case .functionOutput(let id, let output): return (id, output)
        case .state(.failure(let error)): throw error
        default: throw Self.unexpectedFunctionResponse
        }
    }

    /// Queues an invocation and returns its id at once.
    public func invokeAsync(_ function: String, _ input: [UInt8]) async throws(WeftError) -> String {
        switch try await send(.functionInvoke(function: function, input: input, async: true)) {
        case .functionOutput(let id, _): return id
        case .state(.failure(let error)): throw error
        default: throw Self.unexpectedFunctionResponse
        }
    }

    // MARK: the instance side (used by WeftFunction's runtime loop)

    /// Asks the worker for the next invocation: a long poll, not bounded by the request timeout;
    /// it fails when the worker drains the instance (`cancelled`) or the connection ends.
    package func functionNext() async throws(WeftError) -> FunctionInvocation {
        switch try await send(.functionNext, timeoutMs: .max) {
        case .functionInvocation(let invocation): return invocation
        case .state(.failure(let error)): throw error
        default: throw Self.unexpectedFunctionResponse
        }
    }

    /// Reports the outcome of an invocation: its output, or the error it failed with.
    package func functionResult(invocationID: String, output: [UInt8], error: WeftError?) async throws(WeftError) {
        switch try await send(.functionResult(invocationID: invocationID, output: error == nil ? output : [], error: error)) {
        case .ok: return
        case .state(.failure(let error)): throw error
        default: throw Self.unexpectedFunctionResponse
        }
    }

    private static var unexpectedFunctionResponse: WeftError {
        WeftError(.malformedRequest, "unexpected response kind to a function request")
    }
}
