import WeftCore

extension EtcdClient {
    /// The key's current state, nil if absent.
    public func get(_ key: String) async throws(WeftError) -> EtcdKeyValue? {
        try Self.validate(key: key)
        let reply = try await call(
            "/v3/kv/range", EtcdWire.RangeRequest(key: Base64.encode(key)), as: EtcdWire.RangeResponse.self, idempotent: true)
        return try reply.kvs?.first?.decoded()
    }

    /// Every key starting with `prefix` (all keys for ""), in key order, and the store
    /// revision they were read at (watch from `revision + 1` to follow on without a gap).
    public func range(prefix: String) async throws(WeftError) -> (kvs: [EtcdKeyValue], revision: Int64) {
        let start: [UInt8] = prefix.isEmpty ? [0] : Array(prefix.utf8)
        let request = EtcdWire.RangeRequest(
            key: Base64.encode(start), rangeEnd: Base64.encode(EtcdWire.prefixEnd(Array(prefix.utf8))))
        let reply = try await call("/v3/kv/range", request, as: EtcdWire.RangeResponse.self, idempotent: true)
        let kvs = try (reply.kvs ?? []).map { kv throws(WeftError) in try kv.decoded() }
        return (kvs, try Self.revision(reply.header, "/v3/kv/range"))
    }

    /// Sets `key` to `value`, attached to `lease` (0: none). Returns the revision of the put.
    /// Throws `.leaseNotFound` if the lease does not exist (any more).
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws(WeftError) -> Int64 {
        try Self.validate(key: key)
        let request = EtcdWire.PutRequest(key: Base64.encode(key), value: Base64.encode(value), lease: lease == 0 ? nil : EtcdInt64(lease))
        let reply = try await call("/v3/kv/put", request, as: EtcdWire.HeaderResponse.self, idempotent: false)
        return try Self.revision(reply.header, "/v3/kv/put")
    }

    /// Deletes `key`. Returns whether it existed.
    @discardableResult
    public func delete(_ key: String) async throws(WeftError) -> Bool {
        try Self.validate(key: key)
        let reply = try await call(
            "/v3/kv/deleterange", EtcdWire.DeleteRangeRequest(key: Base64.encode(key)),
            as: EtcdWire.DeleteRangeResponse.self, idempotent: false)
        return reply.deleted.orZero > 0
    }

    /// Puts `key` only if its mod revision equals `ifModRevision` (0: only if the key is
    /// absent), atomically. Returns whether it was put, the revision of the transaction (the
    /// key's new mod revision when it was put) and, when it was not, the key's current state
    /// (nil if absent).
    public func putIf(
        _ key: String, _ value: [UInt8], ifModRevision: Int64, lease: Int64 = 0
    ) async throws(WeftError) -> (succeeded: Bool, revision: Int64, current: EtcdKeyValue?) {
        try Self.validate(key: key)
        guard ifModRevision >= 0 else { throw WeftError(.invalidArgument, "ifModRevision must not be negative") }
        let k = Base64.encode(key)
        let put = EtcdWire.PutRequest(key: k, value: Base64.encode(value), lease: lease == 0 ? nil : EtcdInt64(lease))
        let request = EtcdWire.TxnRequest(
            compare: [EtcdWire.Compare(key: k, target: "MOD", result: "EQUAL", modRevision: EtcdInt64(ifModRevision))],
            success: [EtcdWire.RequestOp(requestPut: put)],
            failure: [EtcdWire.RequestOp(requestRange: EtcdWire.RangeRequest(key: k))])
        let reply = try await call("/v3/kv/txn", request, as: EtcdWire.TxnResponse.self, idempotent: false)
        let revision = try Self.revision(reply.header, "/v3/kv/txn")
        if reply.succeeded == true { return (true, revision, nil) }
        let current = try reply.responses?.first?.responseRange?.kvs?.first?.decoded()
        return (false, revision, current)
    }

    /// Deletes `key` only if it is attached to `lease`, atomically. Returns whether it did.
    func delete(_ key: String, ifLease lease: Int64) async throws(WeftError) -> Bool {
        try Self.validate(key: key)
        let k = Base64.encode(key)
        let request = EtcdWire.TxnRequest(
            compare: [EtcdWire.Compare(key: k, target: "LEASE", result: "EQUAL", lease: EtcdInt64(lease))],
            success: [EtcdWire.RequestOp(requestDeleteRange: EtcdWire.DeleteRangeRequest(key: k))],
            failure: [])
        let reply = try await call("/v3/kv/txn", request, as: EtcdWire.TxnResponse.self, idempotent: false)
        return reply.succeeded == true
    }
}
