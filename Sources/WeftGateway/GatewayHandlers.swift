import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import WeftCore
import WeftRuntime

/// What the routes share: the store, the functions, tokens, metrics, bounds. Each route
/// handler lives in an extension (`GatewayHandlers+State`, `+Functions`, `+Watch`, `+Tokens`).
struct GatewayHandlers: Sendable {
    let store: any StateStore
    let functions: any FunctionService
    let tokens: TokenAuthority
    let metrics: GatewayMetrics
    let configuration: GatewayConfiguration
    let watches: WatchStreams
    let logger: Logger

    /// The caller's tenant, from `Authorization: Bearer <token>`; 401 otherwise.
    func authenticate(_ request: Request) async throws(WeftError) -> String {
        try await tokens.authenticate(authorization: request.headers[.authorization])
    }

    /// The request body, at most `limit` bytes (`valueTooLarge` → 413 above it: checked on
    /// Content-Length first, then while reading).
    func body(of request: Request, limit: Int) async throws -> [UInt8] {
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw WeftError(.valueTooLarge, "body is \(declared) bytes, the maximum is \(limit)")
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Array(buffer: buffer)
        } catch is NIOTooManyBytesError {
            throw WeftError(.valueTooLarge, "body is larger than the maximum of \(limit) bytes")
        }
    }

    func query(_ request: Request) throws(WeftError) -> QueryParameters {
        try QueryParameters(request.uri.query)
    }
}
