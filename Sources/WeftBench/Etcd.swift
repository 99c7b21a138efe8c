import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

// MARK: - Base64 (straight into a ByteBuffer, no intermediate copies)

enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encodedLength(_ n: Int) -> Int { ((n + 2) / 3) * 4 }

    static func write<Bytes: Collection<UInt8>>(_ bytes: Bytes, into buffer: inout ByteBuffer) {
        let outLength = encodedLength(bytes.count)
        buffer.reserveCapacity(minimumWritableBytes: outLength)
        let written = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: outLength) { out in
            alphabet.withUnsafeBufferPointer { table in
                var o = 0
                var it = bytes.makeIterator()
                while let b0 = it.next() {
                    let b1 = it.next()
                    let b2 = it.next()
                    let v = UInt32(b0) << 16 | UInt32(b1 ?? 0) << 8 | UInt32(b2 ?? 0)
                    out[o] = table[Int((v >> 18) & 63)]
                    out[o + 1] = table[Int((v >> 12) & 63)]
                    out[o + 2] = b1 == nil ? UInt8(ascii: "=") : table[Int((v >> 6) & 63)]
                    out[o + 3] = b2 == nil ? UInt8(ascii: "=") : table[Int(v & 63)]
                    o += 4
                    if b2 == nil { break }
                }
                return o
            }
        }
        assert(written == outLength)
    }

    static func encode(_ string: String) -> String {
        var b = ByteBufferAllocator().buffer(capacity: encodedLength(string.utf8.count))
        write(string.utf8, into: &b)
        return String(buffer: b)
    }

    static func decode(_ string: String) throws -> [UInt8] {
        guard let d = Data(base64Encoded: string) else {
            throw BenchError.protocolError("bad base64 in etcd reply")
        }
        return [UInt8](d)
    }
}

// MARK: - etcd JSON shapes (gRPC-gateway, int64s as strings, proto field names)

struct EtcdHeader: Decodable {
    var revision: String?
}

struct EtcdKV: Decodable {
    var key: String?
    var value: String?
    var mod_revision: String?
    var version: String?
}

struct EtcdRangeResponse: Decodable {
    var header: EtcdHeader?
    var kvs: [EtcdKV]?
}

struct EtcdWatchMessage: Decodable {
    struct Result: Decodable {
        struct Event: Decodable {
            var type: String?  // omitted for PUT (the proto default)
            var kv: EtcdKV?
        }
        var header: EtcdHeader?
        var created: Bool?
        var canceled: Bool?
        var cancel_reason: String?
        var events: [Event]?
    }
    struct ErrorBody: Decodable {
        var message: String?
        var http_status: Int?
    }
    var result: Result?
    var error: ErrorBody?
}

extension ByteBuffer {
    var data: Data { withUnsafeReadableBytes { Data($0) } }
}

// MARK: - Target and client

/// etcd v3 through its JSON gRPC gateway over HTTP/1.1 (etcd 3.4: `/v3/kv/put`, `/v3/kv/range`,
/// `/v3/watch` on the client URL). One keep-alive connection per bench client.
public struct EtcdTarget: WatchableBenchTarget {
    public let host: String
    public let port: Int
    public let group: any EventLoopGroup
    /// Compact the history after every measured step (keeps long runs of large puts within
    /// etcd's default 2 GiB backend quota).
    public var compactAfterSteps: Bool
    public var system: String { "etcd" }

    public init(host: String = "127.0.0.1", port: Int, compactAfterSteps: Bool = true,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.compactAfterSteps = compactAfterSteps
        self.group = group
    }

    public func makeClient() async throws -> any BenchClient {
        try await EtcdClient.connect(host: host, port: port, group: group)
    }

    public func makeWatcher(key: String) async throws -> any BenchWatcher {
        TaskStampedWatcher(try await EtcdWatcher.start(host: host, port: port, key: key, group: group))
    }

    public func afterStep() async throws {
        guard compactAfterSteps else { return }
        let client = try await EtcdClient.connect(host: host, port: port, group: group)
        do {
            try await client.compact()
        } catch {
            await client.close()
            throw error
        }
        await client.close()
    }
}

public final class EtcdClient: BenchClient {
    public let connection: HTTPConnection

    init(connection: HTTPConnection) {
        self.connection = connection
    }

    public static func connect(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> EtcdClient {
        EtcdClient(connection: try await HTTPConnection.connect(host: host, port: port, group: group))
    }

    private func post(_ uri: String, _ body: ByteBuffer) async throws -> ByteBuffer {
        let response = try await connection.request(method: .POST, uri: uri, body: body)
        guard response.status == .ok else {
            throw BenchError.serverError("etcd \(uri): HTTP \(response.status.code): \(String(buffer: response.body).prefix(300))")
        }
        return response.body
    }

    public func get(_ key: String) async throws -> Int {
        let body = try await post("/v3/kv/range", jsonBody(["key": key], values: [:]))
        let reply = try JSONDecoder().decode(EtcdRangeResponse.self, from: body.data)
        guard let kv = reply.kvs?.first else { return 0 }
        return try Base64.decode(kv.value ?? "").count
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        _ = try await post("/v3/kv/put", jsonBody(["key": key], values: ["value": value]))
    }

    /// Current store revision (from a range response header).
    public func revision() async throws -> UInt64 {
        let body = try await post("/v3/kv/range", jsonBody(["key": "\u{0}"], values: [:]))
        let reply = try JSONDecoder().decode(EtcdRangeResponse.self, from: body.data)
        guard let r = reply.header?.revision.flatMap({ UInt64($0) }) else {
            throw BenchError.protocolError("etcd range reply without header revision")
        }
        return r
    }

    /// Compacts the history up to the current revision (physical: waits until space is freed).
    public func compact() async throws {
        let rev = try await revision()
        var b = connection.channel.allocator.buffer(capacity: 64)
        b.writeString(#"{"revision":"\#(rev)","physical":true}"#)
        let response = try await connection.request(method: .POST, uri: "/v3/kv/compaction", body: b)
        if response.status == .ok { return }
        let text = String(buffer: response.body)
        // Nothing written since the last compaction: already compacted at this revision.
        if text.contains("required revision has been compacted") { return }
        throw BenchError.serverError("etcd /v3/kv/compaction: HTTP \(response.status.code): \(text.prefix(300))")
    }

    public func close() async {
        await connection.close()
    }

    /// `{"k":"base64",...}` with `strings` and `values` base64-encoded, written in one buffer.
    private func jsonBody(_ strings: [String: String], values: [String: [UInt8]]) -> ByteBuffer {
        var size = 2
        for (k, v) in strings { size += k.utf8.count + 6 + Base64.encodedLength(v.utf8.count) }
        for (k, v) in values { size += k.utf8.count + 6 + Base64.encodedLength(v.count) }
        var b = connection.channel.allocator.buffer(capacity: size)
        b.writeInteger(UInt8(ascii: "{"))
        var first = true
        func field(_ name: String) {
            if !first { b.writeInteger(UInt8(ascii: ",")) }
            first = false
            b.writeInteger(UInt8(ascii: "\""))
            b.writeString(name)
            b.writeStaticString("\":\"")
        }
        for (k, v) in strings {
            field(k)
            Base64.write(v.utf8, into: &b)
            b.writeInteger(UInt8(ascii: "\""))
        }
        for (k, v) in values {
            field(k)
            Base64.write(v, into: &b)
            b.writeInteger(UInt8(ascii: "\""))
        }
        b.writeInteger(UInt8(ascii: "}"))
        return b
    }
}

// MARK: - Watch stream

/// Splits a byte stream of concatenated/newline-delimited JSON objects into whole objects,
/// scanning each byte once (strings and escapes aware).
struct JSONObjectSplitter {
    private var bytes: [UInt8] = []
    private var scan = 0  // next byte to look at
    private var objectStart: Int?
    private var depth = 0
    private var inString = false
    private var escaped = false

    mutating func append(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes.append(contentsOf: $0) }
    }

    mutating func next() throws -> ArraySlice<UInt8>? {
        while scan < bytes.count {
            let c = bytes[scan]
            scan += 1
            if inString {
                if escaped { escaped = false }
                else if c == UInt8(ascii: "\\") { escaped = true }
                else if c == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch c {
            case UInt8(ascii: "\""):
                guard objectStart != nil else { throw BenchError.protocolError("etcd watch stream: string outside object") }
                inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                if depth == 0 { objectStart = scan - 1 }
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth < 0 { throw BenchError.protocolError("etcd watch stream: unbalanced JSON") }
                if depth == 0, let start = objectStart {
                    let object = bytes[start..<scan]
                    objectStart = nil
                    compactIfNeeded()
                    return object
                }
            default:
                break
            }
        }
        return nil
    }

    /// Drops consumed bytes once they dominate the array (amortized O(1) per byte).
    private mutating func compactIfNeeded() {
        let keepFrom = objectStart ?? scan
        if keepFrom > 64 * 1024 && keepFrom * 2 > bytes.count {
            bytes.removeFirst(keepFrom)
            scan -= keepFrom
            if objectStart != nil { objectStart! -= keepFrom }
        }
    }
}

/// Reads etcd's streaming `/v3/watch` response: posts the create request when the connection
/// becomes active, completes `created` on the ack, then stamps and queues every event.
final class EtcdWatchHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let requestHead: HTTPRequestHead
    private let requestBody: ByteBuffer
    private let created: EventLoopPromise<Void>
    private let queue: NoticeQueue
    private var splitter = JSONObjectSplitter()
    private var isCreated = false
    private var status: HTTPResponseStatus = .ok
    private var errorBody = ""

    init(requestHead: HTTPRequestHead, requestBody: ByteBuffer, created: EventLoopPromise<Void>, queue: NoticeQueue) {
        self.requestHead = requestHead
        self.requestBody = requestBody
        self.created = created
        self.queue = queue
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(requestHead)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(requestBody))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = ContinuousClock.now
        switch unwrapInboundIn(data) {
        case .head(let h):
            status = h.status
        case .body(let part):
            if status != .ok {
                errorBody += String(buffer: part)
                return
            }
            splitter.append(part)
            do {
                while let object = try splitter.next() {
                    try handle(object, receivedAt: now)
                }
            } catch {
                fail(error, context: context)
            }
        case .end:
            let error: BenchError = status == .ok
                ? .connectionClosed("etcd watch stream ended")
                : .serverError("etcd /v3/watch: HTTP \(status.code): \(errorBody.prefix(300))")
            fail(error, context: context)
        }
    }

    private func handle(_ object: ArraySlice<UInt8>, receivedAt: ContinuousClock.Instant) throws {
        let message = try JSONDecoder().decode(EtcdWatchMessage.self, from: Data(object))
        if let e = message.error {
            throw BenchError.serverError("etcd watch: \(e.message ?? "error")")
        }
        guard let result = message.result else { return }
        if result.canceled == true {
            throw BenchError.serverError("etcd watch canceled: \(result.cancel_reason ?? "")")
        }
        if result.created == true && !isCreated {
            isCreated = true
            created.succeed(())
        }
        for event in result.events ?? [] {
            guard let kv = event.kv else { continue }
            let key = String(decoding: try Base64.decode(kv.key ?? ""), as: UTF8.self)
            queue.push(WatchNotice(
                key: key,
                value: try Base64.decode(kv.value ?? ""),
                revision: kv.mod_revision.flatMap { UInt64($0) } ?? 0,
                receivedAt: receivedAt
            ))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error, context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(BenchError.connectionClosed("etcd watch connection closed"), context: nil)
        context.fireChannelInactive()
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext?) {
        if !isCreated {
            isCreated = true
            created.fail(error)
        }
        queue.finish(error)
        context?.close(promise: nil)
    }
}

/// An etcd watch on one key over its own HTTP connection.
public final class EtcdWatcher: BenchWatcher {
    let channel: any Channel
    let queue: NoticeQueue

    init(channel: any Channel, queue: NoticeQueue) {
        self.channel = channel
        self.queue = queue
    }

    /// Connects, posts `{"create_request":{"key":…}}` (plus `range_end` for a prefix watch) and
    /// returns once etcd acknowledged the watch.
    public static func start(
        host: String, port: Int, key: String, prefix: Bool = false, timeout: Duration = .seconds(10),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> EtcdWatcher {
        var create = #"{"create_request":{"key":"\#(Base64.encode(key))""#
        if prefix {
            var end = Array(key.utf8)
            while let last = end.last, last == 0xFF { end.removeLast() }
            if end.isEmpty {
                end = [0]
            } else {
                end[end.count - 1] += 1
            }
            var b = ByteBufferAllocator().buffer(capacity: Base64.encodedLength(end.count))
            Base64.write(end, into: &b)
            create += #","range_end":"\#(String(buffer: b))""#
        }
        create += "}}"
        let body = ByteBuffer(string: create)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v3/watch", headers: headers)
        let queue = NoticeQueue()
        let loop = group.next()
        let created = loop.makePromise(of: Void.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: largeValueRecvAllocator)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            EtcdWatchHandler(requestHead: head, requestBody: body, created: created, queue: queue))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            created.fail(error)
            throw error
        }
        let timer = loop.scheduleTask(in: .nanoseconds(timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
            created.fail(BenchError.timeout("etcd watch not created within \(timeout)"))
        }
        do {
            try await created.futureResult.get()
            timer.cancel()
        } catch {
            timer.cancel()
            try? await channel.close()
            throw error
        }
        return EtcdWatcher(channel: channel, queue: queue)
    }

    public func next(timeout: Duration) async throws -> WatchNotice {
        try await queue.next(timeout: timeout)
    }

    public func close() async {
        queue.finish(BenchError.connectionClosed("watcher closed"))
        try? await channel.close()
    }
}
