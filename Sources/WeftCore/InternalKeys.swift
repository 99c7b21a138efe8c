/// Keys the system keeps in the store for itself, beside the users' keys. They begin with a NUL
/// byte, which no user key may contain (see `StateKey`), so no client can read, write or guess
/// one; `list` and prefix watches never show them. Being ordinary entries, they are replicated
/// down a chain, copied to joining replicas and written to disk like any other key.
public enum InternalKeys {
    /// Where a cluster keeps its leases: one record per lease (`leaseRecord`), in the shard the
    /// record's key hashes to (the lease's home), holding the lease's TTL in seconds.
    public static let leasePrefix = "\u{0}lease/"

    /// True for a key of the system's (its first byte is NUL).
    @inlinable
    public static func isInternal(_ key: String) -> Bool { key.utf8.first == 0 }

    /// The record key of lease `id`.
    public static func leaseRecord(_ id: LeaseID) -> String { leasePrefix + String(id) }

    /// The lease a record key names, nil if `key` is not a lease record.
    public static func lease(ofRecord key: String) -> LeaseID? {
        guard key.utf8.starts(with: leasePrefix.utf8) else { return nil }
        return LeaseID(String(decoding: key.utf8.dropFirst(leasePrefix.utf8.count), as: UTF8.self))
    }

    /// A record's value: the TTL in seconds, as decimal digits.
    public static func ttlValue(_ seconds: Int64) -> [UInt8] { Array(String(seconds).utf8) }

    /// The TTL a record's value holds, nil if it is not one.
    public static func ttl(fromValue value: [UInt8]) -> Int64? { MemoryStore.parseCounter(value) }
}
