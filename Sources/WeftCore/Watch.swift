/// What a watch follows: one key, or every key under a prefix ("" = all keys; the system's own
/// keys, see `InternalKeys`, are under none).
public enum WatchTarget: Sendable, Equatable {
    case key(String)
    case prefix(String)

    public func matches(_ key: String) -> Bool {
        switch self {
        case .key(let k): k.utf8.elementsEqual(key.utf8)
        case .prefix(let p): key.utf8.starts(with: p.utf8) && !InternalKeys.isInternal(key)
        }
    }
}

/// One change seen by a watcher.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case put = 1, delete = 2 }
    public var kind: Kind
    /// For a put: the new entry (value omitted when the watch asked for keys only).
    /// For a delete: key, `version` = revision of the delete, empty value.
    public var kv: KeyValue
    /// The revision of this change (= kv.version).
    public var revision: Revision { kv.version }

    public init(kind: Kind, kv: KeyValue) {
        self.kind = kind
        self.kv = kv
    }
}

/// Receives a watcher's events. Called from the store's threads, in revision order per key
/// (per shard); must not block. Bounding the backlog is the sink's job: return `false` from
/// `deliver` when it cannot take more, and the store ends the watch with `compacted`.
public protocol WatchSink: AnyObject, Sendable {
    func deliver(_ event: WatchEvent) -> Bool
    /// The watch ended (cancelled by the store, overflowed, or the store shut down).
    func terminate(_ error: WeftError)
}

/// A live watch registration; `cancel()` stops delivery (idempotent).
public protocol WatchRegistration: Sendable {
    /// The first revision this watch delivers from (events with revision ≥ this).
    var startRevision: Revision { get }
    func cancel()
}
