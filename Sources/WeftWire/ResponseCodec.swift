#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import WeftCore

/// Server-side facts added to a status response.
public struct ServerInfo: Sendable, Equatable {
    public var version: String
    public var connections: Int
    /// The transport of the connection the status came over.
    public var transport: String
    /// Every transport the server listens on.
    public var listeners: [Listener]
    /// Cluster mode: the node's view of the cluster as JSON; empty on a single node.
    public var cluster: String = ""

    /// One transport a server listens on: "tcp" or "fabric", its HOST:PORT, and for fabric the
    /// libfabric provider stack (a client needs the same provider to connect).
    public struct Listener: Sendable, Equatable {
        public var transport: String
        public var address: String
        public var provider: String
        public init(transport: String, address: String, provider: String = "") {
            self.transport = transport
            self.address = address
            self.provider = provider
        }
    }

    public init(version: String, connections: Int, transport: String, listeners: [Listener] = []) {
        self.version = version
        self.connections = connections
        self.transport = transport
        self.listeners = listeners
    }
}

/// A response as the client sees it after decoding.
public enum ClientResponse: Sendable, Equatable {
    case state(Result<StateResponse, WeftError>)
    case watchCreated(startRevision: Revision)
    case watchEvents([WatchEvent])
    case watchEnded(WeftError?)
    /// A status response also carries facts about the serving process.
    case status(StoreStatus, ServerInfo)
    /// A bare acknowledgement (of `function_result`).
    case ok
    /// The answer to `replicate`: the receiver's revision of the shard after the change.
    case replicated(revision: Revision)
    /// The answer to `shard_map`: the epoch and the map as JSON.
    case shardMap(epoch: UInt64, json: [UInt8])
    /// The answer to `cache_get`: the value, cacheable for less than `leaseMs`.
    case cachedValue(KeyValue, leaseMs: UInt32)
    /// Unsolicited (id 0): drop `key` from the cache and acknowledge `seq` with `cache_ack`.
    case cacheInvalidate(key: String, seq: UInt64)
    /// Unsolicited (id 0), from a chain's tail: the put this client numbered `seq` (see
    /// `ReplyAt`) is committed, as the head's `written` answer will also say.
    case committed(seq: UInt64, version: Revision, length: UInt64)
    /// The answer to `function_next`: work for an instance.
    case functionInvocation(FunctionInvocation)
    /// The answer to `function_invoke`: the invocation's id and its output (empty when async).
    case functionOutput(invocationID: String, output: [UInt8])
}

extension Weft_V1_Entry {
    init(_ kv: KeyValue, valueLength: Int) {
        self.init()
        key = Data(kv.key.utf8)
        version = kv.version
        createRevision = kv.createRevision
        lease = kv.lease
        self.valueLength = UInt64(valueLength)
    }
}

extension ByteBuffer {
    /// A value answer with its value in the arena's down half (the request granted it).
    public mutating func writeValueResponse(id: UInt64, _ kv: KeyValue, arena: SharedArena) {
        writeValueResponseFast(id: id, kv, arena: arena)
    }

    /// Writes the response to a state request (server side).
    public mutating func writeResponse(id: UInt64, _ result: Result<StateResponse, WeftError>, info: ServerInfo? = nil) {
        switch result {
        case .success(.value(let kv)):
            writeValueResponseFast(id: id, kv)
            return
        case .success(.written(let version, let length)):
            writeWrittenResponseFast(id: id, version: version, length: length)
            return
        default:
            break
        }
        writeResponseWithGeneratedCode(id: id, result, info: info)
    }

    /// Writes a response frame through the generated protobuf code (every kind of response).
    public mutating func writeResponseWithGeneratedCode(id: UInt64, _ result: Result<StateResponse, WeftError>, info: ServerInfo? = nil) {
        var r = Weft_V1_Response()
        r.id = id
        switch result {
        case .failure(let error):
            r.result = .error(Weft_V1_Error(error))
        case .success(let response):
            switch response {
            case .value(let kv):
                r.result = .value(Weft_V1_Entry(kv, valueLength: kv.value.count))
                writeWeftFrame(header: r, payloadBytes: kv.value.count) { $0.writeBytes(kv.value) }
                return
            case .notModified(let version):
                var m = Weft_V1_NotModified()
                m.version = version
                r.result = .notModified(m)
            case .written(let version, let length):
                var w = Weft_V1_Written()
                w.version = version
                w.length = length
                r.result = .written(w)
            case .counter(let value, let version):
                var c = Weft_V1_Counter()
                c.value = value
                c.version = version
                r.result = .counter(c)
            case .deleted(let revision, let previous):
                var d = Weft_V1_Deleted()
                d.revision = revision
                d.previousVersion = previous
                r.result = .deleted(d)
            case .list(let entries, let more, let revision):
                var l = Weft_V1_ListResult()
                l.entries = entries.map { Weft_V1_Entry($0, valueLength: $0.value.count) }
                l.more = more
                l.revision = revision
                r.result = .list(l)
                let total = entries.reduce(0) { $0 + $1.value.count }
                writeWeftFrame(header: r, payloadBytes: total) { buffer in
                    for e in entries { buffer.writeBytes(e.value) }
                }
                return
            case .lease(let leaseID, let ttl):
                var l = Weft_V1_Lease()
                l.id = leaseID
                l.ttlSeconds = ttl
                r.result = .lease(l)
            case .leaseRevoked(let leaseID, let n):
                var l = Weft_V1_LeaseRevoked()
                l.id = leaseID
                l.keysDeleted = UInt32(clamping: n)
                r.result = .leaseRevoked(l)
            case .status(let s):
                var st = Weft_V1_Status()
                st.revision = s.revision
                st.keys = UInt64(s.keys)
                st.valueBytes = UInt64(s.valueBytes)
                st.shards = UInt32(clamping: s.shards)
                st.leases = UInt64(s.leases)
                st.watchers = UInt64(s.watchers)
                st.durable = s.durable
                if let info {
                    st.version = info.version
                    st.connections = UInt64(info.connections)
                    st.transport = info.transport
                    st.cluster = info.cluster
                    st.listeners = info.listeners.map { l in
                        var m = Weft_V1_Listener()
                        m.transport = l.transport
                        m.address = l.address
                        m.provider = l.provider
                        return m
                    }
                }
                r.result = .status(st)
            }
        }
        writeWeftFrame(header: r)
    }

    public mutating func writeWatchCreated(id: UInt64, startRevision: Revision) {
        var r = Weft_V1_Response()
        r.id = id
        var c = Weft_V1_WatchCreated()
        c.startRevision = startRevision
        r.result = .watchCreated(c)
        writeWeftFrame(header: r)
    }

    public mutating func writeWatchEvents(id: UInt64, _ events: some Collection<WatchEvent>) {
        var r = Weft_V1_Response()
        r.id = id
        var w = Weft_V1_WatchEvents()
        w.events = events.map { e in
            var we = Weft_V1_WatchEvent()
            we.kind = e.kind == .put ? .put : .delete
            we.entry = Weft_V1_Entry(e.kv, valueLength: e.kv.value.count)
            return we
        }
        r.result = .watchEvents(w)
        let total = events.reduce(0) { $0 + $1.kv.value.count }
        writeWeftFrame(header: r, payloadBytes: total) { buffer in
            for e in events { buffer.writeBytes(e.kv.value) }
        }
    }

    public mutating func writeWatchEnded(id: UInt64, error: WeftError?) {
        var r = Weft_V1_Response()
        r.id = id
        var e = Weft_V1_WatchEnded()
        if let error { e.error = Weft_V1_Error(error) }
        r.result = .watchEnded(e)
        writeWeftFrame(header: r)
    }

    /// The answer to a `replicate` request.
    public mutating func writeReplicated(id: UInt64, revision: Revision) {
        writeReplicatedFast(id: id, revision: revision)
    }

    /// The answer to a `replicate` request, through the generated code (tests compare).
    public mutating func writeReplicatedWithGeneratedCode(id: UInt64, revision: Revision) {
        var r = Weft_V1_Response()
        r.id = id
        var m = Weft_V1_Replicated()
        m.revision = revision
        r.result = .replicated(m)
        writeWeftFrame(header: r)
    }

    /// The answer to a `cache_get` request: the value (payload) and its cache lease.
    public mutating func writeCachedValue(id: UInt64, _ kv: KeyValue, leaseMs: UInt32) {
        var r = Weft_V1_Response()
        r.id = id
        var m = Weft_V1_CachedValue()
        m.entry = Weft_V1_Entry(kv, valueLength: kv.value.count)
        m.leaseMs = leaseMs
        r.result = .cachedValue(m)
        writeWeftFrame(header: r, payloadBytes: kv.value.count) { $0.writeBytes(kv.value) }
    }

    /// Tells a caching connection to drop `key` (id 0: it answers no request).
    public mutating func writeCacheInvalidate(key: String, seq: UInt64) {
        var r = Weft_V1_Response()
        r.id = 0
        var m = Weft_V1_CacheInvalidate()
        m.key = Data(key.utf8)
        m.seq = seq
        r.result = .cacheInvalidate(m)
        writeWeftFrame(header: r)
    }

    /// Tells a client that its put `seq` is committed (id 0: it answers no request of this
    /// connection).
    public mutating func writeCommitted(seq: UInt64, version: Revision, length: UInt64) {
        var r = Weft_V1_Response()
        r.id = 0
        var m = Weft_V1_Committed()
        m.seq = seq
        m.version = version
        m.length = length
        r.result = .committed(m)
        writeWeftFrame(header: r)
    }

    /// The answer to a `shard_map` request: the epoch, the map's JSON as payload.
    public mutating func writeShardMap(id: UInt64, epoch: UInt64, json: [UInt8]) {
        var r = Weft_V1_Response()
        r.id = id
        var m = Weft_V1_ShardMap()
        m.epoch = epoch
        r.result = .shardMap(m)
        writeWeftFrame(header: r, payloadBytes: json.count) { $0.writeBytes(json) }
    }

    /// An error that answers no particular request (id 0): sent before closing a connection.
    public mutating func writeConnectionError(_ error: WeftError) {
        writeResponse(id: 0, .failure(error))
    }
}

public enum ResponseCodec {
    /// Decodes a response frame (client side).
    public static func decode(_ frame: RawFrame) throws(WeftError) -> (id: UInt64, ClientResponse) {
        if let fast = FastDecode.response(frame) { return fast }
        if let fast = FastDecode.replicatedResponse(frame) { return fast }
        return try decodeWithGeneratedCode(frame)
    }

    /// Decodes any response frame through the generated protobuf code.
    public static func decodeWithGeneratedCode(_ frame: RawFrame) throws(WeftError) -> (id: UInt64, ClientResponse) {
        let r: Weft_V1_Response
        do {
            r = try Weft_V1_Response(frameHeader: frame.header)
        } catch {
            throw WeftError(.malformedRequest, "response header is not a valid protobuf Response: \(error)")
        }
        var payload = frame.payloadBuffer()
        func take(_ n: UInt64) throws(WeftError) -> [UInt8] {
            guard n <= UInt64(payload.readableBytes), let bytes = payload.readBytes(length: Int(n)) else {
                throw WeftError(.malformedRequest, "response \(r.id) promises more payload than it carries")
            }
            return bytes
        }
        func kv(_ e: Weft_V1_Entry) throws(WeftError) -> KeyValue {
            guard let key = String(validating: e.key, as: UTF8.self) else {
                throw WeftError(.malformedRequest, "response \(r.id) carries a key that is not UTF-8")
            }
            return KeyValue(key: key, value: try take(e.valueLength), version: e.version, createRevision: e.createRevision, lease: e.lease)
        }
        guard let result = r.result else {
            throw WeftError(.malformedRequest, "response \(r.id) carries no result")
        }
        let response: ClientResponse
        switch result {
        case .error(let e): response = .state(.failure(WeftError(wire: e)))
        case .ok: response = .ok
        case .replicated(let m): response = .replicated(revision: m.revision)
        case .shardMap(let m): response = .shardMap(epoch: m.epoch, json: try take(UInt64(payload.readableBytes)))
        case .cachedValue(let m): response = .cachedValue(try kv(m.entry), leaseMs: m.leaseMs)
        case .cacheInvalidate(let m):
            guard let key = String(validating: m.key, as: UTF8.self) else {
                throw WeftError(.malformedRequest, "cache invalidation of a key that is not UTF-8")
            }
            response = .cacheInvalidate(key: key, seq: m.seq)
        case .committed(let m): response = .committed(seq: m.seq, version: m.version, length: m.length)
        case .value(let e): response = .state(.success(.value(try kv(e))))
        case .notModified(let m): response = .state(.success(.notModified(version: m.version)))
        case .written(let w): response = .state(.success(.written(version: w.version, length: w.length)))
        case .counter(let c): response = .state(.success(.counter(value: c.value, version: c.version)))
        case .deleted(let d): response = .state(.success(.deleted(revision: d.revision, previousVersion: d.previousVersion)))
        case .list(let l):
            var entries: [KeyValue] = []
            entries.reserveCapacity(l.entries.count)
            for e in l.entries { entries.append(try kv(e)) }
            response = .state(.success(.list(entries: entries, more: l.more, revision: l.revision)))
        case .lease(let l): response = .state(.success(.lease(id: l.id, ttlSeconds: l.ttlSeconds)))
        case .leaseRevoked(let l): response = .state(.success(.leaseRevoked(id: l.id, keysDeleted: Int(l.keysDeleted))))
        case .status(let s):
            var info = ServerInfo(
                version: s.version, connections: Int(s.connections), transport: s.transport,
                listeners: s.listeners.map { ServerInfo.Listener(transport: $0.transport, address: $0.address, provider: $0.provider) })
            info.cluster = s.cluster
            response = .status(
                StoreStatus(
                    revision: s.revision, keys: Int(s.keys), valueBytes: Int(s.valueBytes), shards: Int(s.shards),
                    leases: Int(s.leases), watchers: Int(s.watchers), durable: s.durable),
                info)
        case .watchCreated(let c): response = .watchCreated(startRevision: c.startRevision)
        case .watchEvents(let w):
            var events: [WatchEvent] = []
            events.reserveCapacity(w.events.count)
            for e in w.events {
                events.append(WatchEvent(kind: e.kind == .delete ? .delete : .put, kv: try kv(e.entry)))
            }
            response = .watchEvents(events)
        case .watchEnded(let e): response = .watchEnded(e.hasError ? WeftError(wire: e.error) : nil)
        case .functionInvocation(let m):
            response = .functionInvocation(FunctionInvocation(
                invocationID: m.invocationID, function: m.function, version: m.version,
                deadlineUnixMs: m.deadlineUnixMs, input: try take(UInt64(payload.readableBytes))))
        case .functionOutput(let m):
            response = .functionOutput(invocationID: m.invocationID, output: try take(UInt64(payload.readableBytes)))
        }
        return (r.id, response)
    }
}
