import WeftCore
import WeftTransport
import WeftWire

/// Function requests from ordinary clients of a node (`weft invoke`, `WeftClient.invoke`): they
/// may invoke functions — as `tenant` — but are not instances, so they get no invocations.
public struct ClientInvokeHandler: FunctionRequestHandler {
    public let worker: Worker
    public let tenant: String

    public init(worker: Worker, tenant: String) {
        self.worker = worker
        self.tenant = tenant
    }

    public func next(completion: @escaping @Sendable (Result<FunctionInvocation, WeftError>) -> Void) {
        completion(.failure(WeftError(.invalidArgument, "only function instances ask for invocations")))
    }

    public func result(invocationID: String, output: [UInt8], error: WeftError?) {}

    public func invoke(function: String, input: [UInt8], async: Bool, completion: @escaping @Sendable (Result<(String, [UInt8]), WeftError>) -> Void) {
        worker.invokeForCaller(tenant: tenant, function: function, input: input, async: async, completion: completion)
    }

    public func closed() {}
}
