import WeftCore

/// One tenant's view of a store: its key `K` is the store's `tenants/<tenant>/K`, and nothing
/// outside that prefix can be named, listed or watched through it. Function instances get this
/// view, so a function cannot read or write another tenant's state. Keys that do not fit once
/// prefixed (longer than the key limit) are `invalidKey`.
public final class TenantStore: StateStore {
    public let inner: any StateStore
    public let tenant: String
    /// "tenants/<tenant>/"
    public let prefix: String

    public init(_ inner: any StateStore, tenant: String) {
        self.inner = inner
        self.tenant = tenant
        self.prefix = Self.prefix(of: tenant)
    }

    /// The store prefix of a tenant's keys.
    public static func prefix(of tenant: String) -> String { "tenants/\(tenant)/" }

    public var limits: StoreLimits { inner.limits }

    public func execute(_ request: StateRequest, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        let prefix = self.prefix
        let mapped: StateRequest
        switch request {
        case .get(let k, let range, let since): mapped = .get(key: prefix + k, range: range, ifChangedSince: since)
        case .put(let k, let v, let ifVersion, let lease): mapped = .put(key: prefix + k, value: v, ifVersion: ifVersion, lease: lease)
        case .writeRange(let k, let offset, let bytes, let ifVersion): mapped = .writeRange(key: prefix + k, offset: offset, bytes: bytes, ifVersion: ifVersion)
        case .append(let k, let bytes, let ifVersion): mapped = .append(key: prefix + k, bytes: bytes, ifVersion: ifVersion)
        case .add(let k, let delta): mapped = .add(key: prefix + k, delta: delta)
        case .delete(let k, let ifVersion): mapped = .delete(key: prefix + k, ifVersion: ifVersion)
        case .list(let p, let after, let limit, let keysOnly): mapped = .list(prefix: prefix + p, after: after.map { prefix + $0 }, limit: limit, keysOnly: keysOnly)
        case .leaseGrant, .leaseKeepAlive, .leaseRevoke, .status: mapped = request
        }
        switch request {
        case .get(let k, _, _), .put(let k, _, _, _), .writeRange(let k, _, _, _), .append(let k, _, _), .add(let k, _), .delete(let k, _):
            // Prefixed, an empty key would name the tenant's prefix itself.
            if k.isEmpty {
                completion(.failure(WeftError(.invalidKey, "empty key")))
                return
            }
        default:
            break
        }
        inner.execute(mapped) { result in
            completion(result.map { Self.strip($0, prefix: prefix) })
        }
    }

    public func watch(_ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink, shard: Int?) throws(WeftError) -> any WatchRegistration {
        let mapped: WatchTarget = switch target {
        case .key(let k): .key(prefix + k)
        case .prefix(let p): .prefix(prefix + p)
        }
        return try inner.watch(mapped, fromRevision: fromRevision, includeValues: includeValues, sink: StrippingSink(sink, prefixBytes: prefix.utf8.count), shard: shard)
    }

    public func expireLeases() -> Int { inner.expireLeases() }

    static func strip(_ response: StateResponse, prefix: String) -> StateResponse {
        switch response {
        case .value(var kv):
            kv.key = dropPrefix(kv.key, prefix)
            return .value(kv)
        case .list(let entries, let more, let revision):
            return .list(entries: entries.map { e in
                var e = e
                e.key = dropPrefix(e.key, prefix)
                return e
            }, more: more, revision: revision)
        default:
            return response
        }
    }
}

/// `key` without its first `prefix.utf8.count` bytes (byte-wise: a key may begin with a
/// combining mark that would fuse with the prefix's "/" if counted in characters).
func dropPrefix(_ key: String, _ prefix: String) -> String {
    String(decoding: key.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
}

/// Hands watch events on with the tenant prefix taken off their keys.
final class StrippingSink: WatchSink {
    let inner: any WatchSink
    let prefixBytes: Int

    init(_ inner: any WatchSink, prefixBytes: Int) {
        self.inner = inner
        self.prefixBytes = prefixBytes
    }

    func deliver(_ event: WatchEvent) -> Bool {
        var e = event
        e.kv.key = String(decoding: e.kv.key.utf8.dropFirst(prefixBytes), as: UTF8.self)  // see dropPrefix
        return inner.deliver(e)
    }

    func terminate(_ error: WeftError) {
        inner.terminate(error)
    }
}
