#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import WeftCore

/// Work handed to a function instance: the worker's answer to `function_next`.
public struct FunctionInvocation: Sendable, Equatable {
    public var invocationID: String
    public var function: String
    /// The deployed version (the revision of its deploy) the instance runs.
    public var version: UInt64
    /// When the worker kills the instance if no result has arrived (ms since the Unix epoch).
    public var deadlineUnixMs: UInt64
    public var input: [UInt8]

    public init(invocationID: String, function: String, version: UInt64, deadlineUnixMs: UInt64, input: [UInt8]) {
        self.invocationID = invocationID
        self.function = function
        self.version = version
        self.deadlineUnixMs = deadlineUnixMs
        self.input = input
    }
}

// MARK: requests

extension RequestCodec {
    /// Decodes `function_result`; the output travels in the payload, bounded like a value.
    static func decodeFunctionResult(_ m: Weft_V1_FunctionResult, frame: RawFrame, limits: StoreLimits) throws(WeftError) -> ServerRequest {
        let error: WeftError? = m.hasError ? WeftError(wire: m.error) : nil
        if error != nil, frame.payloadCount > 0 {
            throw WeftError(.malformedRequest, "a failed function result carries no output")
        }
        return .functionResult(invocationID: m.invocationID, output: try value(frame, limits), error: error)
    }

    /// Decodes `function_invoke`; the input travels in the payload, bounded like a value.
    static func decodeFunctionInvoke(_ m: Weft_V1_FunctionInvoke, frame: RawFrame, limits: StoreLimits) throws(WeftError) -> ServerRequest {
        guard !m.function.isEmpty else { throw WeftError(.invalidArgument, "function_invoke names no function") }
        return .functionInvoke(function: m.function, input: try value(frame, limits), async: m.async)
    }
}

extension Weft_V1_Request {
    /// Fills in a function request; returns its payload.
    mutating func setFunctionOp(_ request: ServerRequest) -> [UInt8] {
        switch request {
        case .functionNext:
            op = .functionNext(Weft_V1_FunctionNext())
            return []
        case .functionResult(let invocationID, let output, let error):
            var m = Weft_V1_FunctionResult()
            m.invocationID = invocationID
            if let error { m.error = Weft_V1_Error(error) }
            op = .functionResult(m)
            return error == nil ? output : []
        case .functionInvoke(let function, let input, let async):
            var m = Weft_V1_FunctionInvoke()
            m.function = function
            m.async = async
            op = .functionInvoke(m)
            return input
        case .state, .watch, .cancelWatch, .replicate, .shardMap, .cacheGet, .cacheAck, .commitFeed:
            preconditionFailure("not a function request")
        }
    }
}

// MARK: responses

extension ByteBuffer {
    /// Answers `function_next` with work (server side); the input is the payload.
    public mutating func writeFunctionInvocation(id: UInt64, _ invocation: FunctionInvocation) {
        var r = Weft_V1_Response()
        r.id = id
        var m = Weft_V1_FunctionInvocation()
        m.invocationID = invocation.invocationID
        m.function = invocation.function
        m.version = invocation.version
        m.deadlineUnixMs = invocation.deadlineUnixMs
        r.result = .functionInvocation(m)
        writeWeftFrame(header: r, payloadBytes: invocation.input.count) { $0.writeBytes(invocation.input) }
    }

    /// Answers `function_invoke` (server side): the invocation id, and the output unless async.
    public mutating func writeFunctionOutput(id: UInt64, invocationID: String, output: [UInt8]) {
        var r = Weft_V1_Response()
        r.id = id
        var m = Weft_V1_FunctionOutput()
        m.invocationID = invocationID
        r.result = .functionOutput(m)
        writeWeftFrame(header: r, payloadBytes: output.count) { $0.writeBytes(output) }
    }

    /// A bare acknowledgement (answers `function_result`).
    public mutating func writeOK(id: UInt64) {
        var r = Weft_V1_Response()
        r.id = id
        r.result = .ok(Weft_V1_Ok())
        writeWeftFrame(header: r)
    }

    /// Writes any response a client can receive, through the generated code (tests, tools).
    public mutating func writeClientResponse(id: UInt64, _ response: ClientResponse) {
        switch response {
        case .state(let result): writeResponseWithGeneratedCode(id: id, result)
        case .status(let status, let info): writeResponseWithGeneratedCode(id: id, .success(.status(status)), info: info)
        case .watchCreated(let start): writeWatchCreated(id: id, startRevision: start)
        case .watchEvents(let events): writeWatchEvents(id: id, events)
        case .watchEnded(let error): writeWatchEnded(id: id, error: error)
        case .ok: writeOK(id: id)
        case .functionInvocation(let invocation): writeFunctionInvocation(id: id, invocation)
        case .functionOutput(let invocationID, let output): writeFunctionOutput(id: id, invocationID: invocationID, output: output)
        case .replicated(let revision): writeReplicated(id: id, revision: revision)
        case .shardMap(let epoch, let json): writeShardMap(id: id, epoch: epoch, json: json)
        case .cachedValue(let kv, let leaseMs): writeCachedValue(id: id, kv, leaseMs: leaseMs)
        case .cacheInvalidate(let key, let seq): writeCacheInvalidate(key: key, seq: seq)
        case .committed(let seq, let version, let length): writeCommitted(seq: seq, version: version, length: length)
        }
    }
}
