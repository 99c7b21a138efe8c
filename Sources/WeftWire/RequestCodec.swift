#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import WeftCore

/// A request as the server sees it after decoding.
public enum ServerRequest: Sendable, Equatable {
    case state(StateRequest)
    /// `shard`: a prefix watch of that shard only (see `StateStore.watch`).
    case watch(target: WatchTarget, fromRevision: Revision?, keysOnly: Bool, shard: Int? = nil)
    case cancelWatch(watchID: UInt64)
    /// An instance asks for its next invocation (a long poll).
    case functionNext
    /// An instance reports the outcome of an invocation: its output, or the error it failed with.
    case functionResult(invocationID: String, output: [UInt8], error: WeftError?)
    /// Runs a function: answered with its output, or at once with only its id when `async`.
    case functionInvoke(function: String, input: [UInt8], async: Bool)
    /// Cluster: a change (or shard copy, or fence) from the predecessor in a chain.
    case replicate(ReplicationMessage)
    /// Cluster: the node's shard map.
    case shardMap
    /// Cluster: a read for a coherent cache (answered with the value and a cache lease).
    case cacheGet(key: String)
    /// Cluster: a cache dropped the key of invalidation `seq` (no response).
    case cacheAck(seq: UInt64)
    /// Cluster: the client names itself on this connection (no response); the node, as a
    /// chain's tail, tells it here when its puts are committed (`ClientResponse.committed`).
    case commitFeed(client: UInt64)
}

extension ServerRequest {
    /// Bytes of value this request carries in its frame payload (a sizing hint).
    public var payloadBytes: Int {
        let s: StateRequest
        switch self {
        case .state(let request): s = request
        case .functionResult(_, let output, _): return output.count
        case .functionInvoke(_, let input, _): return input.count
        case .replicate(let m): return m.payloadBytes
        case .watch, .cancelWatch, .functionNext, .shardMap, .cacheGet, .cacheAck, .commitFeed: return 0
        }
        switch s {
        case .put(_, let value, _, _): return value.count
        case .writeRange(_, _, let bytes, _), .append(_, let bytes, _): return bytes.count
        default: return 0
        }
    }
}

/// The outcome of decoding one request frame.
public enum DecodedRequest: Sendable {
    /// `epoch`: the shard-map epoch the client routed with (0 = not routed). `replyAt`: a put
    /// the chain's tail may also answer (see `ReplyAt`).
    case request(id: UInt64, ServerRequest, epoch: UInt64, replyAt: ReplyAt?)
    /// The header decoded (so the id is known) but its content is invalid: answer with the error.
    case invalid(id: UInt64, WeftError)
    /// The header is not a Request at all: the connection cannot be trusted any further.
    case undecodable(String)
}

public enum RequestCodec {
    /// Decodes a request frame; validates keys (UTF-8, length, NUL) and value sizes.
    public static func decode(_ frame: RawFrame, limits: StoreLimits) -> DecodedRequest {
        if let fast = FastDecode.request(frame, limits: limits) { return fast }
        if let fast = FastDecode.replicateRequest(frame, limits: limits) { return fast }
        return decodeWithGeneratedCode(frame, limits: limits)
    }

    /// Decodes any request frame through the generated protobuf code.
    public static func decodeWithGeneratedCode(_ frame: RawFrame, limits: StoreLimits) -> DecodedRequest {
        let header: Weft_V1_Request
        do {
            header = try Weft_V1_Request(frameHeader: frame.header)
        } catch {
            return .undecodable("request header is not a valid protobuf Request: \(error)")
        }
        do {
            let replyAt = header.hasReplyAt ? ReplyAt(client: header.replyAt.client, seq: header.replyAt.seq) : nil
            return .request(id: header.id, try decodeOp(header, frame: frame, limits: limits), epoch: header.epoch, replyAt: replyAt)
        } catch {
            return .invalid(id: header.id, error)
        }
    }

    /// Reads the request id of a frame that was too large to take, to answer it.
    public static func requestID(ofOversizedHeader header: ByteBuffer) -> UInt64? {
        (try? Weft_V1_Request(frameHeader: header))?.id
    }

    private static func key(_ bytes: Data, _ limits: StoreLimits) throws(WeftError) -> String {
        try StateKey.validate(bytes: bytes, limits: limits)
    }

    /// A frame's whole payload (from the stream or the arena) as a value, refused above the
    /// value size limit.
    static func value(_ frame: RawFrame, _ limits: StoreLimits) throws(WeftError) -> [UInt8] {
        guard frame.payloadCount <= limits.valueBytesMax else {
            throw WeftError(.valueTooLarge, "value of \(frame.payloadCount) bytes exceeds the limit of \(limits.valueBytesMax)")
        }
        return frame.payloadArray()
    }

    private static func decodeOp(_ r: Weft_V1_Request, frame: RawFrame, limits: StoreLimits) throws(WeftError) -> ServerRequest {
        guard let op = r.op else { throw WeftError(.malformedRequest, "request \(r.id) names no operation") }
        switch op {
        case .get(let g):
            return .state(.get(
                key: try key(g.key, limits),
                range: g.hasRange ? ByteRange(offset: g.range.offset, length: g.range.length) : nil,
                ifChangedSince: g.hasIfChangedSince ? g.ifChangedSince : nil))
        case .put(let p):
            return .state(.put(
                key: try key(p.key, limits), value: try value(frame, limits),
                ifVersion: p.hasIfVersion ? p.ifVersion : nil, lease: p.lease))
        case .writeRange(let w):
            return .state(.writeRange(
                key: try key(w.key, limits), offset: w.offset, bytes: try value(frame, limits),
                ifVersion: w.hasIfVersion ? w.ifVersion : nil))
        case .append(let a):
            return .state(.append(
                key: try key(a.key, limits), bytes: try value(frame, limits),
                ifVersion: a.hasIfVersion ? a.ifVersion : nil))
        case .add(let a):
            return .state(.add(key: try key(a.key, limits), delta: a.delta))
        case .delete(let d):
            return .state(.delete(key: try key(d.key, limits), ifVersion: d.hasIfVersion ? d.ifVersion : nil))
        case .list(let l):
            let prefix = try StateKey.validatePrefix(bytes: l.prefix, limits: limits)
            let after: String? = l.hasAfter ? try key(l.after, limits) : nil
            let limit = l.limit == 0 ? limits.listLimitMax : min(Int(l.limit), limits.listLimitMax)
            return .state(.list(prefix: prefix, after: after, limit: limit, keysOnly: l.keysOnly))
        case .watch(let w):
            let target: WatchTarget
            switch w.target {
            case .key(let k): target = .key(try key(k, limits))
            case .prefix(let p): target = .prefix(try StateKey.validatePrefix(bytes: p, limits: limits))
            case nil: throw WeftError(.malformedRequest, "watch names neither a key nor a prefix")
            }
            return .watch(target: target, fromRevision: w.hasFromRevision ? w.fromRevision : nil, keysOnly: w.keysOnly, shard: w.hasShard ? Int(w.shard) : nil)
        case .cancelWatch(let c):
            return .cancelWatch(watchID: c.watchID)
        case .leaseGrant(let g):
            return .state(.leaseGrant(ttlSeconds: g.ttlSeconds, id: g.id))
        case .leaseKeepAlive(let k):
            return .state(.leaseKeepAlive(id: k.id))
        case .leaseRevoke(let k):
            return .state(.leaseRevoke(id: k.id))
        case .status:
            return .state(.status)
        case .functionNext:
            return .functionNext
        case .functionResult(let m):
            return try decodeFunctionResult(m, frame: frame, limits: limits)
        case .functionInvoke(let m):
            return try decodeFunctionInvoke(m, frame: frame, limits: limits)
        case .replicate(let m):
            return try decodeReplicate(m, frame: frame, limits: limits)
        case .shardMap:
            return .shardMap
        case .cacheGet(let g):
            return .cacheGet(key: try key(g.key, limits))
        case .cacheAck(let a):
            return .cacheAck(seq: a.seq)
        case .commitFeed(let f):
            return .commitFeed(client: f.client)
        }
    }
}

extension ByteBuffer {
    /// Writes a request frame (client side).
    public mutating func writeRequest(id: UInt64, _ request: ServerRequest, epoch: UInt64 = 0, replyAt: ReplyAt? = nil) {
        switch request {
        case .state(.get(let key, nil, nil)) where replyAt == nil:
            writeGetRequestFast(id: id, key: key, epoch: epoch)
            return
        case .state(.put(let key, let value, let ifVersion, let lease)):
            writePutRequestFast(id: id, key: key, value: value, ifVersion: ifVersion, lease: lease, epoch: epoch, replyAt: replyAt)
            return
        case .replicate(let message):
            writeReplicateRequestFast(id: id, epoch: epoch, message)
            return
        default:
            break
        }
        writeRequestWithGeneratedCode(id: id, request, epoch: epoch, replyAt: replyAt)
    }

    /// Writes a request frame on a connection with a shared arena (a function instance's, to its
    /// worker): a put whose value `arena` carries puts it in the up half when `useUpHalf`, and a
    /// get grants the answer the down half when `grantDownHalf`. Returns which half the frame
    /// took (`.up`: the value is in the arena; `.down`: the answer may be).
    public mutating func writeRequest(
        id: UInt64, _ request: ServerRequest, epoch: UInt64 = 0, arena: SharedArena, useUpHalf: Bool, grantDownHalf: Bool
    ) -> SharedArena.Half? {
        let start = writerIndex
        switch request {
        case .state(.put(let key, let value, let ifVersion, let lease)) where useUpHalf && arena.carries(value.count):
            writePutRequestFast(id: id, key: key, value: [], ifVersion: ifVersion, lease: lease, epoch: epoch)
            arena.write(value, to: .up)
            ArenaFrame.markPayloadInArena(&self, frameStart: start, count: value.count)
            return .up
        case .state(.get) where grantDownHalf:
            writeRequest(id: id, request, epoch: epoch)
            ArenaFrame.markGrant(&self, frameStart: start)
            return .down
        default:
            writeRequest(id: id, request, epoch: epoch)
            return nil
        }
    }

    /// Writes a request frame through the generated protobuf code (every operation).
    public mutating func writeRequestWithGeneratedCode(id: UInt64, _ request: ServerRequest, epoch: UInt64 = 0, replyAt: ReplyAt? = nil) {
        var r = Weft_V1_Request()
        r.id = id
        r.epoch = epoch
        if let replyAt {
            r.replyAt.client = replyAt.client
            r.replyAt.seq = replyAt.seq
        }
        var payload: [UInt8] = []
        switch request {
        case .state(let s):
            switch s {
            case .get(let key, let range, let since):
                var g = Weft_V1_GetRequest()
                g.key = Data(key.utf8)
                if let range { g.range.offset = range.offset; g.range.length = range.length }
                if let since { g.ifChangedSince = since }
                r.op = .get(g)
            case .put(let key, let value, let ifVersion, let lease):
                var p = Weft_V1_PutRequest()
                p.key = Data(key.utf8)
                if let ifVersion { p.ifVersion = ifVersion }
                p.lease = lease
                r.op = .put(p)
                payload = value
            case .writeRange(let key, let offset, let bytes, let ifVersion):
                var w = Weft_V1_WriteRangeRequest()
                w.key = Data(key.utf8)
                w.offset = offset
                if let ifVersion { w.ifVersion = ifVersion }
                r.op = .writeRange(w)
                payload = bytes
            case .append(let key, let bytes, let ifVersion):
                var a = Weft_V1_AppendRequest()
                a.key = Data(key.utf8)
                if let ifVersion { a.ifVersion = ifVersion }
                r.op = .append(a)
                payload = bytes
            case .add(let key, let delta):
                var a = Weft_V1_AddRequest()
                a.key = Data(key.utf8)
                a.delta = delta
                r.op = .add(a)
            case .delete(let key, let ifVersion):
                var d = Weft_V1_DeleteRequest()
                d.key = Data(key.utf8)
                if let ifVersion { d.ifVersion = ifVersion }
                r.op = .delete(d)
            case .list(let prefix, let after, let limit, let keysOnly):
                var l = Weft_V1_ListRequest()
                l.prefix = Data(prefix.utf8)
                if let after { l.after = Data(after.utf8) }
                l.limit = UInt32(clamping: limit)
                l.keysOnly = keysOnly
                r.op = .list(l)
            case .leaseGrant(let ttl, let id):
                var g = Weft_V1_LeaseGrantRequest()
                g.ttlSeconds = ttl
                g.id = id
                r.op = .leaseGrant(g)
            case .leaseKeepAlive(let id):
                var k = Weft_V1_LeaseKeepAliveRequest()
                k.id = id
                r.op = .leaseKeepAlive(k)
            case .leaseRevoke(let id):
                var k = Weft_V1_LeaseRevokeRequest()
                k.id = id
                r.op = .leaseRevoke(k)
            case .status:
                r.op = .status(Weft_V1_StatusRequest())
            }
        case .watch(let target, let from, let keysOnly, let shard):
            var w = Weft_V1_WatchRequest()
            if let shard { w.shard = UInt32(clamping: shard) }
            switch target {
            case .key(let k): w.target = .key(Data(k.utf8))
            case .prefix(let p): w.target = .prefix(Data(p.utf8))
            }
            if let from { w.fromRevision = from }
            w.keysOnly = keysOnly
            r.op = .watch(w)
        case .cancelWatch(let watchID):
            var c = Weft_V1_CancelWatchRequest()
            c.watchID = watchID
            r.op = .cancelWatch(c)
        case .functionNext, .functionResult, .functionInvoke:
            payload = r.setFunctionOp(request)
        case .replicate, .shardMap, .cacheGet, .cacheAck, .commitFeed:
            payload = r.setClusterOp(request)
        }
        writeWeftFrame(header: r, payloadBytes: payload.count) { $0.writeBytes(payload) }
    }
}
