#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WeftCore

/// A typed handler: its input is decoded from JSON and its output encoded to JSON. Input that
/// does not decode fails the invocation with `invalidArgument`.
public protocol CodableHandler: Sendable {
    associatedtype Input: Decodable
    associatedtype Output: Encodable
    func handle(_ input: Input, context: FunctionContext) async throws -> Output
}

/// Runs a `CodableHandler` as a `ByteHandler` (JSON in, JSON out).
public struct JSONByteHandler<Handler: CodableHandler>: ByteHandler {
    public let handler: Handler

    public init(_ handler: Handler) {
        self.handler = handler
    }

    public func handle(_ input: [UInt8], context: FunctionContext) async throws -> [UInt8] {
        let decoded: Handler.Input
        do {
            decoded = try JSONDecoder().decode(Handler.Input.self, from: Data(input))
        } catch {
            throw WeftError(.invalidArgument, "input is not JSON for \(Handler.Input.self): \(error)")
        }
        let output = try await handler.handle(decoded, context: context)
        return Array(try JSONEncoder().encode(output))
    }
}

/// A `CodableHandler` made of a closure.
public struct CodableClosureHandler<Input: Decodable, Output: Encodable>: CodableHandler {
    private let body: @Sendable (Input, FunctionContext) async throws -> Output

    public init(_ body: @escaping @Sendable (Input, FunctionContext) async throws -> Output) {
        self.body = body
    }

    public func handle(_ input: Input, context: FunctionContext) async throws -> Output {
        try await body(input, context)
    }
}
