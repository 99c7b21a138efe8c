/// The live leases and the keys attached to each. Guarded by the store's lease lock, which is
/// taken after a shard lock, never before one.
struct LeaseTable: Sendable {
    struct Lease: Sendable {
        var ttlSeconds: Int64
        var deadlineMs: Int64
        var keys: Set<ByteKey> = []
        /// Kept elsewhere (a cluster's lease, whose TTL its home shard's head keeps): it never
        /// expires here, and leaves the table once no key here is attached to it.
        var external = false
    }

    private(set) var leases: [LeaseID: Lease] = [:]

    var count: Int { leases.count }

    func contains(_ id: LeaseID) -> Bool { leases[id] != nil }

    /// Whether `id` exists and its TTL has not run out at `nowMs`.
    func isLive(_ id: LeaseID, nowMs: Int64) -> Bool {
        guard let lease = leases[id] else { return false }
        return lease.deadlineMs > nowMs
    }

    mutating func insert(_ id: LeaseID, ttlSeconds: Int64, nowMs: Int64) {
        leases[id] = Lease(ttlSeconds: ttlSeconds, deadlineMs: Self.deadline(nowMs: nowMs, ttlSeconds: ttlSeconds))
    }

    /// Restarts the TTL of a live lease; returns its TTL, nil if there is no live lease `id`.
    mutating func keepAlive(_ id: LeaseID, nowMs: Int64) -> Int64? {
        guard isLive(id, nowMs: nowMs), let ttl = leases[id]?.ttlSeconds else { return nil }
        leases[id]!.deadlineMs = Self.deadline(nowMs: nowMs, ttlSeconds: ttl)
        return ttl
    }

    /// Moves `key` from lease `previous` to lease `next` (0 = none).
    mutating func move(_ key: ByteKey, from previous: LeaseID, to next: LeaseID) {
        guard previous != next else { return }
        if previous != 0 {
            leases[previous]?.keys.remove(key)
            if leases[previous]?.external == true && leases[previous]?.keys.isEmpty == true { leases[previous] = nil }
        }
        if next != 0 { leases[next]?.keys.insert(key) }
    }

    /// Makes `id` an external lease (see `Lease.external`), live until it is ended.
    mutating func adoptExternal(_ id: LeaseID) {
        if leases[id] == nil { leases[id] = Lease(ttlSeconds: 0, deadlineMs: .max) }
        leases[id]!.deadlineMs = .max
        leases[id]!.external = true
    }

    /// Drops external leases no key is attached to (adopted for a write that then failed).
    mutating func pruneExternal() {
        leases = leases.filter { !$0.value.external || !$0.value.keys.isEmpty }
    }

    mutating func remove(_ id: LeaseID) -> Lease? {
        leases.removeValue(forKey: id)
    }

    /// Removes and returns the leases whose TTL has run out at `nowMs`.
    mutating func removeExpired(nowMs: Int64) -> [(id: LeaseID, lease: Lease)] {
        let expired = leases.filter { $0.value.deadlineMs <= nowMs }
        for id in expired.keys { leases[id] = nil }
        return expired.map { (id: $0.key, lease: $0.value) }
    }

    private static func deadline(nowMs: Int64, ttlSeconds: Int64) -> Int64 {
        let (ms, overflow) = ttlSeconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return .max }
        let (deadline, overflow2) = nowMs.addingReportingOverflow(ms)
        return overflow2 ? .max : deadline
    }
}
