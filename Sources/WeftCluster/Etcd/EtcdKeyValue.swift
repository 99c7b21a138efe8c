/// One key as etcd stores it. Keys are UTF-8 text here (bytes that are not valid UTF-8 are
/// replaced when read back); values are bytes.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// Revision of the put that created the key (since its last deletion).
    public var createRevision: Int64
    /// Revision of the last put to the key.
    public var modRevision: Int64
    /// Number of puts since the key was created (1 after the first).
    public var version: Int64
    /// The lease the key is attached to; 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}

/// One change delivered by an `EtcdWatch`, in revision order.
public enum EtcdEvent: Sendable, Equatable {
    /// The key was created or overwritten; `kv` is its new state.
    case put(EtcdKeyValue)
    /// The key was deleted (or its lease expired or was revoked) at `modRevision`.
    case delete(key: String, modRevision: Int64)

    /// The key the event is about.
    public var key: String {
        switch self {
        case .put(let kv): kv.key
        case .delete(let key, _): key
        }
    }

    /// The revision at which the change happened.
    public var modRevision: Int64 {
        switch self {
        case .put(let kv): kv.modRevision
        case .delete(_, let revision): revision
        }
    }
}
