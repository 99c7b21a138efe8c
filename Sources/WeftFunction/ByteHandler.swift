/// The base of the handler ladder: bytes in, bytes out. Everything else (`CodableHandler`,
/// closures) is adapted to it. A thrown `WeftError` reaches the caller with its code; any other
/// error becomes `internalError` with its description.
public protocol ByteHandler: Sendable {
    func handle(_ input: [UInt8], context: FunctionContext) async throws -> [UInt8]
}

/// A handler made of a closure.
public struct ClosureHandler: ByteHandler {
    private let body: @Sendable ([UInt8], FunctionContext) async throws -> [UInt8]

    public init(_ body: @escaping @Sendable ([UInt8], FunctionContext) async throws -> [UInt8]) {
        self.body = body
    }

    public func handle(_ input: [UInt8], context: FunctionContext) async throws -> [UInt8] {
        try await body(input, context)
    }
}
