import HTTPTypes
import Hummingbird
import NIOCore
import WeftCore

/// `GET|PUT|DELETE /v1/state/{key}` and `GET /v1/state?prefix=`: the caller's keys, with
/// versions as entity tags (`ETag: "<version>"`, `If-Match`, `If-None-Match`).
extension GatewayHandlers {
    static let statePathPrefix = "/v1/state/"

    /// The store key named by the request path (percent-decoded, UTF-8, no NUL), inside the
    /// tenant's namespace.
    func stateKey(_ request: Request, tenant: String) throws(WeftError) -> (key: String, storeKey: String) {
        let path = request.uri.path
        guard path.utf8.starts(with: Self.statePathPrefix.utf8) else { throw WeftError(.invalidKey, "key is empty") }
        let raw = path.dropFirst(Self.statePathPrefix.count)
        guard let bytes = PercentDecoding.decode(raw) else { throw WeftError(.invalidKey, "key is not valid percent-encoding") }
        let key = try StateKey.validate(bytes: bytes, limits: store.limits)
        return (key, try TenantKeys.storeKey(key, tenant: tenant, limits: store.limits))
    }

    func getState(_ request: Request) async throws -> Response {
        let tenant = try await authenticate(request)
        let (key, storeKey) = try stateKey(request, tenant: tenant)
        metrics.recordStateOp("get")
        let condition = try request.headers[.ifNoneMatch].map { header throws(WeftError) in try ETagCondition(header) }
        var since: Revision?
        if case .versions(let versions)? = condition, versions.count == 1 { since = versions[0] }
        var response: StateResponse
        do {
            response = try await store.execute(.get(key: storeKey, ifChangedSince: since))
            // The store answers "not newer than"; an entity tag matches only the exact version.
            if case .notModified(let version) = response, version != since {
                response = try await store.execute(.get(key: storeKey))
            }
        } catch {
            throw tenantError(error, tenant: tenant)
        }
        switch response {
        case .notModified(let version):
            return Response(status: .notModified, headers: versionHeaders(version))
        case .value(let kv):
            if let condition, condition.matches(kv.version) {
                return Response(status: .notModified, headers: versionHeaders(kv.version))
            }
            var headers = versionHeaders(kv.version)
            headers[.contentType] = "application/octet-stream"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: kv.value)))
        default:
            throw WeftError(.internalError, "unexpected reply to get: \(key)")
        }
    }

    func putState(_ request: Request) async throws -> Response {
        let tenant = try await authenticate(request)
        let (_, storeKey) = try stateKey(request, tenant: tenant)
        var ifVersion: Revision?
        var mustExist = false
        if let header = request.headers[.ifMatch] {
            switch try ETagCondition(header) {
            case .any: mustExist = true
            case .versions(let versions):
                guard versions.count == 1 else { throw WeftError(.invalidArgument, "If-Match takes one version") }
                ifVersion = versions[0]
            }
        }
        if let header = request.headers[.ifNoneMatch] {
            guard header.trimmingSpaces == "*" else { throw WeftError(.invalidArgument, "PUT takes only 'If-None-Match: *' (create only)") }
            guard ifVersion == nil || ifVersion == 0, !mustExist else {
                throw WeftError(.invalidArgument, "If-None-Match: * contradicts If-Match")
            }
            ifVersion = 0
        }
        let value = try await body(of: request, limit: store.limits.valueBytesMax)
        metrics.recordStateOp("put")
        if mustExist {
            ifVersion = try await currentVersion(storeKey, tenant: tenant)
            guard ifVersion != 0 else { throw WeftError(.versionMismatch, "If-Match: * but the key does not exist") }
        }
        let response: StateResponse
        do {
            response = try await store.execute(.put(key: storeKey, value: value, ifVersion: ifVersion))
        } catch {
            throw tenantError(error, tenant: tenant)
        }
        guard case .written(let version, _) = response else { throw WeftError(.internalError, "unexpected reply to put") }
        return .json(.object([("version", .uint(version))]), headers: versionHeaders(version))
    }

    func deleteState(_ request: Request) async throws -> Response {
        let tenant = try await authenticate(request)
        let (_, storeKey) = try stateKey(request, tenant: tenant)
        var ifVersion: Revision?
        if let header = request.headers[.ifMatch] {
            switch try ETagCondition(header) {
            case .any: ifVersion = try await currentVersion(storeKey, tenant: tenant)
            case .versions(let versions):
                guard versions.count == 1 else { throw WeftError(.invalidArgument, "If-Match takes one version") }
                ifVersion = versions[0]
            }
        }
        metrics.recordStateOp("delete")
        let response: StateResponse
        do {
            response = try await store.execute(.delete(key: storeKey, ifVersion: ifVersion))
        } catch {
            throw tenantError(error, tenant: tenant)
        }
        guard case .deleted(let revision, let previous) = response else { throw WeftError(.internalError, "unexpected reply to delete") }
        return .json(.object([("revision", .uint(revision)), ("previousVersion", .uint(previous))]))
    }

    /// `GET /v1/state?prefix=P&after=K&limit=N[&values=true]`: the caller's keys in byte order.
    func listState(_ request: Request) async throws -> Response {
        let tenant = try await authenticate(request)
        let query = try query(request)
        let prefix = try TenantKeys.storePrefix(query["prefix"] ?? "", tenant: tenant, limits: store.limits)
        let after = try query["after"].map { after throws(WeftError) in try TenantKeys.storeKey(after, tenant: tenant, limits: store.limits) }
        let limitText = query["limit"] ?? "1000"
        guard let limit = Int(limitText), limit >= 1 else { throw WeftError(.invalidArgument, "limit must be a positive integer") }
        let withValues = try query.flag("values")
        metrics.recordStateOp("list")
        let response: StateResponse
        do {
            response = try await store.execute(
                .list(prefix: prefix, after: after, limit: min(limit, store.limits.listLimitMax), keysOnly: !withValues))
        } catch {
            throw tenantError(error, tenant: tenant)
        }
        guard case .list(let entries, let more, let revision) = response else { throw WeftError(.internalError, "unexpected reply to list") }
        let items: [JSONValue] = entries.compactMap { kv in
            guard let key = TenantKeys.strip(kv.key, tenant: tenant) else { return nil }
            var members: [(String, JSONValue)] = [("key", .string(key)), ("version", .uint(kv.version))]
            if withValues { members.append(("valueBase64", .string(Base64.encode(kv.value)))) }
            return .object(members)
        }
        return .json(.object([("entries", .array(items)), ("more", .bool(more)), ("revision", .uint(revision))]))
    }

    /// The key's version, 0 if absent.
    private func currentVersion(_ storeKey: String, tenant: String) async throws(WeftError) -> Revision {
        do {
            guard case .value(let kv) = try await store.execute(.get(key: storeKey, range: ByteRange(offset: 0, length: 0))) else { return 0 }
            return kv.version
        } catch where error.code == .notFound {
            return 0
        } catch {
            throw tenantError(error, tenant: tenant)
        }
    }

    func versionHeaders(_ version: Revision) -> HTTPFields {
        var headers = HTTPFields()
        headers[.eTag] = "\"\(version)\""
        headers[.weftVersion] = String(version)
        return headers
    }

    /// The store's error with the tenant's prefix taken out of its message.
    func tenantError(_ error: WeftError, tenant: String) -> WeftError {
        WeftError(error.code, error.message.replacing(TenantKeys.prefix(tenant), with: ""))
    }
}

/// An `If-Match`/`If-None-Match` header: `*`, or a list of versions as entity tags
/// (`"3"`, `W/"3"` and a bare `3` are all accepted).
enum ETagCondition: Equatable {
    case any
    case versions([Revision])

    init(_ header: String) throws(WeftError) {
        let text = header.trimmingSpaces
        if text == "*" {
            self = .any
            return
        }
        var versions: [Revision] = []
        for part in text.split(separator: ",") {
            var tag = Substring(part.trimmingSpaces)
            if tag.hasPrefix("W/") { tag = tag.dropFirst(2) }
            if tag.count >= 2, tag.first == "\"", tag.last == "\"" { tag = tag.dropFirst().dropLast() }
            guard let version = Revision(tag) else { throw WeftError(.invalidArgument, "entity tag must be a version like \"3\"") }
            versions.append(version)
        }
        guard !versions.isEmpty, versions.count <= 64 else { throw WeftError(.invalidArgument, "expected 1–64 entity tags") }
        self = .versions(versions)
    }

    func matches(_ version: Revision) -> Bool {
        switch self {
        case .any: version != 0
        case .versions(let versions): versions.contains(version)
        }
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
