import HTTPTypes
import Hummingbird
import NIOCore
import WeftCore
import WeftRuntime

/// Functions: deploy (`POST /v1/functions/{name}`, body = executable, query = limits), list,
/// invoke (sync, or `?async=true` → 202 with an id) and invocation records. Every call is
/// scoped to the caller's tenant; other tenants' functions and invocations are `notFound`.
extension GatewayHandlers {
    func deploy(_ request: Request, name: String) async throws -> Response {
        let tenant = try await authenticate(request)
        let manifest = try Self.manifest(name: name, query: query(request))
        let code = try await body(of: request, limit: configuration.codeBytesMax ?? store.limits.valueBytesMax)
        guard !code.isEmpty else { throw WeftError(.invalidArgument, "the body must hold the function's executable") }
        let info = try await functions.deploy(tenant: tenant, manifest: manifest, code: code)
        logger.info("function deployed", metadata: ["tenant": "\(tenant)", "function": "\(name)", "version": "\(info.version)"])
        return .json(Self.json(info))
    }

    func listFunctions(_ request: Request) async throws -> Response {
        let tenant = try await authenticate(request)
        let infos = try await functions.list(tenant: tenant)
        return .json(.object([("functions", .array(infos.map(Self.json)))]))
    }

    func invoke(_ request: Request, name: String) async throws -> Response {
        let tenant = try await authenticate(request)
        try FunctionManifest(name: name).validate()
        let asynchronous = try query(request).flag("async")
        let input = try await body(of: request, limit: configuration.inputBytesMax)
        if asynchronous {
            let id: String
            do {
                id = try await functions.invokeAsync(tenant: tenant, function: name, input: input)
            } catch {
                metrics.recordInvocationError(error.code)
                throw error
            }
            var headers = HTTPFields()
            headers[.location] = "/v1/invocations/\(id)"
            headers[.weftInvocationID] = id
            return .json(.object([("id", .string(id))]), status: .accepted, headers: headers)
        }
        let record: InvocationRecord
        do {
            record = try await functions.invoke(tenant: tenant, function: name, input: input)
        } catch {
            metrics.recordInvocationError(error.code)
            throw error
        }
        metrics.recordInvocation(tenant: tenant, record)
        var headers = HTTPFields()
        headers[.weftInvocationID] = record.id
        headers[.weftCold] = record.cold ? "true" : "false"
        headers[.weftDurationUs] = String(record.durationUs)
        switch record.status {
        case .succeeded:
            headers[.contentType] = "application/octet-stream"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: record.output)))
        case .failed:
            let error = record.error ?? WeftError(.internalError, "invocation failed")
            let failure = GatewayFailure(error, details: [
                ("invocationId", .string(record.id)), ("stderrTail", .string(record.stderrTail)),
            ])
            return .error(failure, headers: headers)
        case .queued, .running:
            headers[.location] = "/v1/invocations/\(record.id)"
            return .json(.object([("id", .string(record.id))]), status: .accepted, headers: headers)
        }
    }

    func invocation(_ request: Request, id: String) async throws -> Response {
        let tenant = try await authenticate(request)
        guard (1...128).contains(id.utf8.count) else { throw WeftError(.notFound, "no invocation '\(id)'") }
        let record = try await functions.invocation(tenant: tenant, id: id)
        return .json(Self.json(record))
    }

    // MARK: JSON

    static func json(_ info: FunctionInfo) -> JSONValue {
        let m = info.manifest
        return .object([
            ("name", .string(m.name)),
            ("version", .uint(info.version)),
            ("codeBytes", .int(Int64(info.codeBytes))),
            ("memoryMB", .int(Int64(m.memoryMB))),
            ("timeoutMs", .int(Int64(m.timeoutMs))),
            ("concurrency", .int(Int64(m.concurrency))),
            ("network", .bool(m.network)),
            ("env", .object(m.env.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
        ])
    }

    static func json(_ record: InvocationRecord) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("id", .string(record.id)),
            ("function", .string(record.function)),
            ("version", .uint(record.version)),
            ("status", .string(record.status.rawValue)),
            ("outputBase64", .string(Base64.encode(record.output))),
            ("outputTruncated", .bool(record.outputTruncated)),
        ]
        if let error = record.error {
            members.append(("error", .object([
                ("code", .string(error.code.description)),
                ("codeNumber", .uint(UInt64(error.code.rawValue))),
                ("message", .string(error.message)),
            ])))
        }
        members += [
            ("stderrTail", .string(record.stderrTail)),
            ("startedAtMs", .int(record.startedAtMs)),
            ("durationUs", .int(record.durationUs)),
            ("cold", .bool(record.cold)),
            ("billedGBs", .double(record.billedGBs)),
        ]
        return .object(members)
    }

    // MARK: Manifest from the query

    static let manifestParameters: Set<String> = ["memory", "timeout", "concurrency", "network", "env"]
    static let envEntriesMax = 256

    /// `memory` (MB, or with MB/M/GB/G), `timeout` (ms, or with ms/s/m), `concurrency`,
    /// `network` (true/false), `env` (repeated `KEY=VALUE`). Unknown parameters are rejected.
    static func manifest(name: String, query: QueryParameters) throws(WeftError) -> FunctionManifest {
        var manifest = FunctionManifest(name: name)
        for item in query.items where !manifestParameters.contains(item.name) {
            throw WeftError(.invalidArgument, "unknown parameter '\(item.name)' (expected memory, timeout, concurrency, network, env)")
        }
        if let text = query["memory"] { manifest.memoryMB = try quantity(text, name: "memory", units: ["": 1, "mb": 1, "m": 1, "gb": 1024, "g": 1024]) }
        if let text = query["timeout"] { manifest.timeoutMs = try quantity(text, name: "timeout", units: ["": 1, "ms": 1, "s": 1000, "m": 60_000]) }
        if let text = query["concurrency"] { manifest.concurrency = try quantity(text, name: "concurrency", units: ["": 1]) }
        manifest.network = try query.flag("network")
        let envs = query.all("env")
        guard envs.count <= envEntriesMax else { throw WeftError(.invalidArgument, "at most \(envEntriesMax) env entries") }
        for entry in envs {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            let validKey = !key.isEmpty && key.utf8.count <= 256 && key.utf8.first.map { !(0x30...0x39).contains($0) } == true
                && key.utf8.allSatisfy { (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f }
            guard parts.count == 2, validKey else { throw WeftError(.invalidArgument, "env must be KEY=VALUE with KEY of A-Z, a-z, 0-9, '_'") }
            guard !parts[1].utf8.contains(0) else { throw WeftError(.invalidArgument, "env values must not contain NUL") }
            manifest.env[key] = String(parts[1])
        }
        try manifest.validate()
        return manifest
    }

    /// A non-negative integer with an optional unit suffix, scaled by the unit.
    private static func quantity(_ text: String, name: String, units: [String: Int]) throws(WeftError) -> Int {
        let lowered = text.lowercased()
        let digits = lowered.prefix { $0.isASCII && $0.isNumber }
        let unit = String(lowered.dropFirst(digits.count))
        guard !digits.isEmpty, digits.count <= 12, let number = Int(digits), let scale = units[unit] else {
            let suffixes = units.keys.filter { !$0.isEmpty }.sorted().joined(separator: ", ")
            throw WeftError(.invalidArgument, "\(name) must be a number\(suffixes.isEmpty ? "" : " (units: \(suffixes))"), not '\(text)'")
        }
        return number * scale
    }
}
