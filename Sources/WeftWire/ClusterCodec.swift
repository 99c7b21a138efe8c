#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import WeftCore

/// One message of chain replication between nodes (`replicate` on the wire): a change of a
/// shard, a piece of a shard copy, or a fence. See `Replicate` in Proto/weft.proto.
public struct ReplicationMessage: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The key now holds `entry` (its version is the change's revision).
        case put
        /// `entry.key` was deleted at `revision`.
        case delete
        /// A shard copy starts: the receiver drops what it holds of the shard.
        case snapshotBegin
        /// One key of a shard copy.
        case snapshotEntry
        /// The copy is complete up to `revision`.
        case snapshotEnd
        /// Everything the sender acknowledged before moving to the request's epoch has been sent.
        case fence
        /// A copy starts against what the receiver holds: it keeps its data and answers with its
        /// shard revision; then come entries newer than that, `snapshotKeep`s, and the end.
        case snapshotDelta
        /// A key of the copy that the receiver should hold at `entry.version` (no value).
        case snapshotKeep
        /// To the head of a lease's home shard: is lease `revision` (as a bit pattern) live?
        /// Answered with its TTL in seconds, or `leaseNotFound`.
        case leaseCheck
        /// Lease `revision` (as a bit pattern) has ended: the receiver deletes its keys in the
        /// shards it heads, and answers with how many it deleted.
        case leaseEnd
    }

    public var shard: Int
    /// The sending node's id.
    public var from: String
    public var kind: Kind
    /// The entry of a put or snapshot entry (value included); for a delete only its key matters.
    public var entry: KeyValue?
    /// The change's revision (put, delete) or the copy's (snapshot end).
    public var revision: Revision
    /// The revision of the shard's previous change in the stream, so a gap is detected.
    public var previous: Revision

    /// A put's client, whom the chain's tail tells once the change is committed.
    public var replyAt: ReplyAt?

    public init(
        shard: Int, from: String, kind: Kind, entry: KeyValue? = nil, revision: Revision = 0, previous: Revision = 0, replyAt: ReplyAt? = nil
    ) {
        self.replyAt = replyAt
        self.shard = shard
        self.from = from
        self.kind = kind
        self.entry = entry
        self.revision = revision
        self.previous = previous
    }

    /// Bytes of value carried in the frame payload.
    public var payloadBytes: Int { entry?.value.count ?? 0 }
}

extension ReplicationMessage.Kind {
    init(wire: Weft_V1_Replicate.Kind) throws(WeftError) {
        switch wire {
        case .put: self = .put
        case .delete: self = .delete
        case .snapshotBegin: self = .snapshotBegin
        case .snapshotEntry: self = .snapshotEntry
        case .snapshotEnd: self = .snapshotEnd
        case .fence: self = .fence
        case .snapshotDelta: self = .snapshotDelta
        case .snapshotKeep: self = .snapshotKeep
        case .leaseCheck: self = .leaseCheck
        case .leaseEnd: self = .leaseEnd
        case .unspecified, .UNRECOGNIZED: throw WeftError(.malformedRequest, "replicate carries an unknown kind")
        }
    }

    var wire: Weft_V1_Replicate.Kind {
        switch self {
        case .put: .put
        case .delete: .delete
        case .snapshotBegin: .snapshotBegin
        case .snapshotEntry: .snapshotEntry
        case .snapshotEnd: .snapshotEnd
        case .fence: .fence
        case .snapshotDelta: .snapshotDelta
        case .snapshotKeep: .snapshotKeep
        case .leaseCheck: .leaseCheck
        case .leaseEnd: .leaseEnd
        }
    }
}

extension RequestCodec {
    static func decodeReplicate(_ m: Weft_V1_Replicate, frame: RawFrame, limits: StoreLimits) throws(WeftError) -> ServerRequest {
        let kind = try ReplicationMessage.Kind(wire: m.kind)
        var entry: KeyValue?
        if m.hasEntry {
            let key = try StateKey.validateReplicated(bytes: m.entry.key, limits: limits)
            let value = try value(frame, limits)
            guard UInt64(value.count) == m.entry.valueLength else {
                throw WeftError(.malformedRequest, "replicate entry promises \(m.entry.valueLength) bytes, carries \(value.count)")
            }
            entry = KeyValue(key: key, value: value, version: m.entry.version, createRevision: m.entry.createRevision, lease: m.entry.lease)
        }
        switch kind {
        case .put, .delete, .snapshotEntry, .snapshotKeep:
            guard entry != nil else { throw WeftError(.malformedRequest, "replicate \(kind) carries no entry") }
        default: break
        }
        let replyAt = m.hasReplyAt ? ReplyAt(client: m.replyAt.client, seq: m.replyAt.seq) : nil
        return .replicate(ReplicationMessage(
            shard: Int(m.shard), from: m.from, kind: kind, entry: entry, revision: m.revision, previous: m.previous, replyAt: replyAt))
    }
}

extension Weft_V1_Request {
    /// Sets a cluster operation; returns the payload to send with it.
    mutating func setClusterOp(_ request: ServerRequest) -> [UInt8] {
        switch request {
        case .replicate(let msg):
            var m = Weft_V1_Replicate()
            m.shard = UInt32(clamping: msg.shard)
            m.from = msg.from
            m.kind = msg.kind.wire
            if let e = msg.entry { m.entry = Weft_V1_Entry(e, valueLength: e.value.count) }
            m.revision = msg.revision
            m.previous = msg.previous
            if let replyAt = msg.replyAt {
                m.replyAt.client = replyAt.client
                m.replyAt.seq = replyAt.seq
            }
            op = .replicate(m)
            return msg.entry?.value ?? []
        case .shardMap:
            op = .shardMap(Weft_V1_ShardMapRequest())
            return []
        case .cacheGet(let key):
            var g = Weft_V1_CacheGetRequest()
            g.key = Data(key.utf8)
            op = .cacheGet(g)
            return []
        case .cacheAck(let seq):
            var a = Weft_V1_CacheAck()
            a.seq = seq
            op = .cacheAck(a)
            return []
        case .commitFeed(let client):
            var f = Weft_V1_CommitFeed()
            f.client = client
            op = .commitFeed(f)
            return []
        default:
            preconditionFailure("not a cluster request")
        }
    }
}
