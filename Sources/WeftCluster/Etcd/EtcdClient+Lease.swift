import WeftCore

extension EtcdClient {
    /// Grants a lease of `ttlSeconds` and returns its ID. etcd may grant a longer TTL than
    /// asked (its minimum is about 2 s with default settings), never a shorter one.
    public func leaseGrant(ttlSeconds: Int64) async throws(WeftError) -> Int64 {
        guard ttlSeconds > 0 else { throw WeftError(.invalidArgument, "lease TTL must be positive") }
        let reply = try await call(
            "/v3/lease/grant", EtcdWire.LeaseGrantRequest(ttl: EtcdInt64(ttlSeconds)),
            as: EtcdWire.LeaseGrantResponse.self, idempotent: false)
        if let error = reply.error, !error.isEmpty {
            throw WeftError(.internalError, "etcd /v3/lease/grant: \(error)")
        }
        guard let id = reply.id?.value, id != 0 else {
            throw WeftError(.internalError, "etcd /v3/lease/grant: reply without a lease ID")
        }
        return id
    }

    /// Refreshes lease `id` once; returns its TTL in seconds from now. Throws
    /// `.leaseNotFound` if the lease expired, was revoked or never existed.
    @discardableResult
    public func leaseKeepAlive(_ id: Int64) async throws(WeftError) -> Int64 {
        try await leaseKeepAlive(id, timeoutMs: nil)
    }

    /// `leaseKeepAlive` bounded by `timeoutMs` (at most `requestTimeoutMs`).
    func leaseKeepAlive(_ id: Int64, timeoutMs: Int64?) async throws(WeftError) -> Int64 {
        // A stream on the gateway: one request object in, one `{"result":…}` object out.
        let path = "/v3/lease/keepalive"
        let reply = try await call(
            path, EtcdWire.LeaseIDRequest(id: EtcdInt64(id)), as: EtcdWire.Streamed<EtcdWire.LeaseKeepAliveResponse>.self,
            idempotent: true, timeoutMs: timeoutMs)
        if let e = reply.error {
            throw EtcdErrorMapping.error(grpcCode: e.grpcCode ?? 2, message: e.message ?? "stream error", path: path)
        }
        guard let result = reply.result else {
            throw WeftError(.internalError, "etcd \(path): reply without result")
        }
        // An unknown or expired lease is answered with TTL 0 (omitted), not an error.
        let ttl = result.ttl.orZero
        guard ttl > 0 else { throw WeftError(.leaseNotFound, "etcd lease \(id) expired or unknown") }
        return ttl
    }

    /// Revokes lease `id`, deleting every key attached to it. Throws `.leaseNotFound` if it
    /// does not exist (which, after a retried request, may mean it was just revoked).
    public func leaseRevoke(_ id: Int64) async throws(WeftError) {
        _ = try await call(
            "/v3/lease/revoke", EtcdWire.LeaseIDRequest(id: EtcdInt64(id)), as: EtcdWire.HeaderResponse.self,
            idempotent: true)
    }
}
