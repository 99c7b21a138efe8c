import WeftCore
import WeftWire

/// What a server does with the function requests of a connection (`function_next`,
/// `function_result`, `function_invoke`). A worker gives one to each instance's channel; a node
/// may give one to its state server so that its clients can invoke functions. A server without
/// one answers these requests with `invalidArgument`.
///
/// Methods are called on the connection's event loop and must not block it; completions may be
/// called from any thread, once each.
public protocol FunctionRequestHandler: Sendable {
    /// An instance asks for work; complete when an invocation is ready (or with an error, e.g.
    /// `cancelled` when the worker drains it).
    func next(completion: @escaping @Sendable (Result<FunctionInvocation, WeftError>) -> Void)
    /// The outcome of an invocation this instance was given.
    func result(invocationID: String, output: [UInt8], error: WeftError?)
    /// Run another function (chaining / fan-out); complete with (invocationID, output) or the
    /// failure. When `async`, complete once it is queued, with an empty output.
    func invoke(function: String, input: [UInt8], async: Bool, completion: @escaping @Sendable (Result<(String, [UInt8]), WeftError>) -> Void)
    /// The connection closed (for an instance: it exited or crashed).
    func closed()
}
