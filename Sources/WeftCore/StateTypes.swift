/// A revision: every mutation gets the next one. Monotonic, never reused (not across deletes,
/// restarts or failovers). A key's version is the revision of its last modification; 0 = absent.
public typealias Revision = UInt64

/// A lease identifier. 0 means "no lease".
public typealias LeaseID = Int64

/// One stored key with its value and metadata.
public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// Revision of the last modification (the key's version).
    public var version: Revision
    /// Revision at which the key was created (since its last delete).
    public var createRevision: Revision
    /// Lease the key is attached to, 0 if none.
    public var lease: LeaseID

    public init(key: String, value: [UInt8], version: Revision, createRevision: Revision, lease: LeaseID = 0) {
        self.key = key
        self.value = value
        self.version = version
        self.createRevision = createRevision
        self.lease = lease
    }
}

/// Cluster mode: whom the tail of a put's chain tells, besides the head's answer, that the put
/// is committed: a client (by the id it gave its connections, see `CommitFeed` on the wire) and
/// that client's number for the put.
public struct ReplyAt: Sendable, Hashable {
    public var client: UInt64
    public var seq: UInt64
    public init(client: UInt64, seq: UInt64) {
        self.client = client
        self.seq = seq
    }
}

/// A byte range of a value: `offset` and at most `length` bytes (clipped at the end).
public struct ByteRange: Sendable, Equatable {
    public var offset: UInt64
    public var length: UInt64
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

/// The operations of the state model, as values. The wire, the client and the store all speak these.
public enum StateRequest: Sendable, Equatable {
    /// Read a key, optionally only a byte range, optionally only if its version is newer than
    /// `ifChangedSince` (else `.notModified`).
    case get(key: String, range: ByteRange? = nil, ifChangedSince: Revision? = nil)
    /// Replace the value. `ifVersion`: only if the key's version equals it (0 = create only).
    case put(key: String, value: [UInt8], ifVersion: Revision? = nil, lease: LeaseID = 0)
    /// Overwrite bytes at `offset` (≤ current length), extending the value as needed.
    case writeRange(key: String, offset: UInt64, bytes: [UInt8], ifVersion: Revision? = nil)
    /// Append bytes to the value (creates the key if absent).
    case append(key: String, bytes: [UInt8], ifVersion: Revision? = nil)
    /// Add `delta` to a signed 64-bit counter stored as decimal ASCII (absent = 0).
    case add(key: String, delta: Int64)
    /// Delete a key, optionally only if its version equals `ifVersion`.
    case delete(key: String, ifVersion: Revision? = nil)
    /// Keys with `prefix`, in byte order, strictly after `after`, at most `limit`.
    case list(prefix: String, after: String? = nil, limit: Int, keysOnly: Bool = false)
    /// Grant a lease for `ttlSeconds`. `id` 0 lets the store choose.
    case leaseGrant(ttlSeconds: Int64, id: LeaseID = 0)
    /// Restart the lease's TTL.
    case leaseKeepAlive(id: LeaseID)
    /// End the lease now; its keys are deleted.
    case leaseRevoke(id: LeaseID)
    /// Counters and identity of the store.
    case status

    /// True for operations that change state (and so go through the change log when durable).
    public var isMutation: Bool {
        switch self {
        case .get, .list, .status, .leaseKeepAlive: false
        default: true
        }
    }
}

/// Replies to `StateRequest`s. Errors are thrown/returned as `WeftError`, never as a response.
public enum StateResponse: Sendable, Equatable {
    /// `get`: the value (or the requested range of it) with its metadata.
    case value(KeyValue)
    /// `get` with `ifChangedSince`: the key still has this version.
    case notModified(version: Revision)
    /// `put`, `writeRange`, `append`: the new version and the value's new length.
    case written(version: Revision, length: UInt64)
    /// `add`: the counter's new value and version.
    case counter(value: Int64, version: Revision)
    /// `delete`: the revision of the delete and the version the key had.
    case deleted(revision: Revision, previousVersion: Revision)
    /// `list`: entries in byte order; `more` if the limit cut the result; `revision`: every change
    /// at or below it is reflected in `entries` (later ones may be too).
    case list(entries: [KeyValue], more: Bool, revision: Revision)
    /// `leaseGrant`, `leaseKeepAlive`: the lease and its TTL.
    case lease(id: LeaseID, ttlSeconds: Int64)
    /// `leaseRevoke`: done, with the number of keys deleted.
    case leaseRevoked(id: LeaseID, keysDeleted: Int)
    case status(StoreStatus)
}

public struct StoreStatus: Sendable, Equatable {
    public var revision: Revision
    public var keys: Int
    public var valueBytes: Int
    public var shards: Int
    public var leases: Int
    public var watchers: Int
    public var durable: Bool
    public init(revision: Revision, keys: Int, valueBytes: Int, shards: Int, leases: Int, watchers: Int, durable: Bool) {
        self.revision = revision
        self.keys = keys
        self.valueBytes = valueBytes
        self.shards = shards
        self.leases = leases
        self.watchers = watchers
        self.durable = durable
    }
}
