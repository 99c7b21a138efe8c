import NIOCore
import NIOPosix
import WeftClient

// MARK: - RESP2 values and codec

/// A RESP2 reply.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; `nil` is the null bulk string (`$-1`).
    case bulkString(ByteBuffer?)
    /// An array; `nil` is the null array (`*-1`).
    case array([RESPValue]?)
}

/// Incremental RESP2 reply decoder. Handles replies split across any number of reads, nested
/// arrays (without re-parsing completed elements) and large bulk strings (waits until the whole
/// payload has arrived, then takes it as one slice: no per-read re-scan of the payload).
public struct RESPDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    /// Longest line (type byte + header/simple string + CRLF) accepted before failing.
    public var maxLineLength = 64 * 1024
    /// Largest bulk string accepted (Redis' own limit is 512 MiB).
    public var maxBulkLength = 512 * 1024 * 1024

    /// Arrays being assembled: elements so far and how many are still missing.
    private var stack: [(elements: [RESPValue], remaining: Int)] = []

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try decodeOne(&buffer) else { return .needMoreData }
        if let complete = push(value) {
            context.fireChannelRead(Self.wrapInboundOut(complete))
        }
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }

    /// Feeds a parsed element into the array stack; returns a top-level reply once complete.
    private mutating func push(_ value: RESPValue?) -> RESPValue? {
        var value = value  // nil: an array header was pushed, nothing completed yet
        while let v = value {
            guard !stack.isEmpty else { return v }
            stack[stack.count - 1].elements.append(v)
            stack[stack.count - 1].remaining -= 1
            if stack[stack.count - 1].remaining == 0 {
                value = .array(stack.removeLast().elements)
            } else {
                value = nil
            }
        }
        return nil
    }

    /// Parses one element (a scalar, or an array header). Returns nil when more data is needed,
    /// leaving the reader index untouched. Returns `.some(nil)` for a non-empty array header,
    /// which is pushed on the stack.
    private mutating func decodeOne(_ buffer: inout ByteBuffer) throws -> RESPValue?? {
        let start = buffer.readerIndex
        guard let crlf = findCRLF(buffer) else {
            if buffer.readableBytes > maxLineLength {
                throw BenchError.protocolError("RESP line longer than \(maxLineLength) bytes")
            }
            return nil
        }
        let lineLength = crlf - start  // type byte + content
        guard lineLength >= 1 else { throw BenchError.protocolError("empty RESP line") }
        let type = buffer.getInteger(at: start, as: UInt8.self)!
        let content = buffer.getSlice(at: start + 1, length: lineLength - 1)!

        switch type {
        case UInt8(ascii: "+"):
            buffer.moveReaderIndex(to: crlf + 2)
            return .some(.simpleString(String(buffer: content)))
        case UInt8(ascii: "-"):
            buffer.moveReaderIndex(to: crlf + 2)
            return .some(.error(String(buffer: content)))
        case UInt8(ascii: ":"):
            let n = try parseInt(content)
            buffer.moveReaderIndex(to: crlf + 2)
            return .some(.integer(n))
        case UInt8(ascii: "$"):
            let n = try parseInt(content)
            if n < 0 {
                buffer.moveReaderIndex(to: crlf + 2)
                return .some(.bulkString(nil))
            }
            guard n <= maxBulkLength else { throw BenchError.protocolError("bulk string of \(n) bytes") }
            let length = Int(n)
            let payloadStart = crlf + 2
            // Whole payload + trailing CRLF present?
            guard buffer.writerIndex - payloadStart >= length + 2 else { return nil }
            guard buffer.getInteger(at: payloadStart + length, as: UInt16.self) == 0x0D0A else {
                throw BenchError.protocolError("bulk string not terminated by CRLF")
            }
            buffer.moveReaderIndex(to: payloadStart)
            let payload = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 2)
            return .some(.bulkString(payload))
        case UInt8(ascii: "*"):
            let n = try parseInt(content)
            buffer.moveReaderIndex(to: crlf + 2)
            if n < 0 { return .some(.array(nil)) }
            if n == 0 { return .some(.array([])) }
            var elements: [RESPValue] = []
            elements.reserveCapacity(Int(min(n, 1024)))
            stack.append((elements, Int(n)))
            return .some(nil)
        default:
            throw BenchError.protocolError("unknown RESP type byte \(type)")
        }
    }

    /// Index of the CR of the first CRLF at or after the reader index.
    private func findCRLF(_ buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            let limit = min(raw.count, maxLineLength + 2)
            guard limit >= 2 else { return nil }
            var i = 0
            while i < limit - 1 {
                if raw[i] == 0x0D {
                    if raw[i + 1] == 0x0A { return buffer.readerIndex + i }
                }
                i += 1
            }
            return nil
        }
    }

    private func parseInt(_ buffer: ByteBuffer) throws -> Int64 {
        guard let n = Int64(String(buffer: buffer)) else {
            throw BenchError.protocolError("bad RESP integer '\(String(buffer: buffer))'")
        }
        return n
    }
}

/// Encodes commands as RESP arrays of bulk strings.
public enum RESPEncoder {
    /// Encodes `args` (each a bulk string) into one buffer sized exactly for it.
    public static func encode(_ args: [[UInt8]], allocator: ByteBufferAllocator) -> ByteBuffer {
        var size = 1 + decimalLength(args.count) + 2
        for a in args { size += 1 + decimalLength(a.count) + 2 + a.count + 2 }
        var buffer = allocator.buffer(capacity: size)
        writeArrayHeader(args.count, into: &buffer)
        for a in args {
            writeBulkHeader(a.count, into: &buffer)
            buffer.writeBytes(a)
            buffer.writeStaticString("\r\n")
        }
        return buffer
    }

    /// `SET key value` in a single buffer reserved to its exact size: header, then the value
    /// bytes copied once.
    public static func set(key: String, value: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        let keyLength = key.utf8.count
        let size = 4 /* *3\r\n */ + 9 /* $3\r\nSET\r\n */
            + 1 + decimalLength(keyLength) + 2 + keyLength + 2
            + 1 + decimalLength(value.count) + 2 + value.count + 2
        var buffer = allocator.buffer(capacity: size)
        buffer.writeStaticString("*3\r\n$3\r\nSET\r\n")
        writeBulkHeader(keyLength, into: &buffer)
        buffer.writeString(key)
        buffer.writeStaticString("\r\n")
        writeBulkHeader(value.count, into: &buffer)
        buffer.writeBytes(value)
        buffer.writeStaticString("\r\n")
        assert(buffer.readableBytes == size)
        return buffer
    }

    /// `GET key`.
    public static func get(key: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let keyLength = key.utf8.count
        var buffer = allocator.buffer(capacity: 13 + 1 + decimalLength(keyLength) + 2 + keyLength + 2)
        buffer.writeStaticString("*2\r\n$3\r\nGET\r\n")
        writeBulkHeader(keyLength, into: &buffer)
        buffer.writeString(key)
        buffer.writeStaticString("\r\n")
        return buffer
    }

    static func writeArrayHeader(_ n: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        buffer.writeString(String(n))
        buffer.writeStaticString("\r\n")
    }

    static func writeBulkHeader(_ n: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "$"))
        buffer.writeString(String(n))
        buffer.writeStaticString("\r\n")
    }

    static func decimalLength(_ n: Int) -> Int {
        var n = n
        var digits = 1
        while n >= 10 {
            n /= 10
            digits += 1
        }
        return digits
    }
}

// MARK: - Client handler

struct RedisRequest: Sendable {
    var buffer: ByteBuffer
    var promise: EventLoopPromise<RESPValue>
}

/// Matches replies to requests FIFO: each written request enqueues its promise.
final class RedisClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var pending = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 4)
    private var closedError: (any Error)?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let e = closedError {
            request.promise.fail(e)
            promise?.fail(e)
            return
        }
        pending.append(request.promise)
        context.write(wrapOutboundOut(request.buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let reply = unwrapInboundIn(data)
        guard let promise = pending.popFirst() else {
            context.fireErrorCaught(BenchError.protocolError("unsolicited Redis reply"))
            return
        }
        promise.succeed(reply)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(BenchError.connectionClosed("Redis connection closed"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        if closedError == nil { closedError = error }
        while let p = pending.popFirst() { p.fail(error) }
    }
}

// MARK: - Target and client

/// Redis over RESP2: one TCP connection per bench client.
public struct RedisTarget: BenchTarget {
    public let host: String
    public let port: Int
    public let group: any EventLoopGroup
    public var system: String { "redis" }

    public init(host: String = "127.0.0.1", port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.group = group
    }

    public func makeClient() async throws -> any BenchClient {
        try await RedisClient.connect(host: host, port: port, group: group)
    }
}

public final class RedisClient: BenchClient {
    public let channel: any Channel
    public let executor: (any TaskExecutor)?

    init(channel: any Channel) {
        self.channel = channel
        self.executor = LoopExecutor(channel.eventLoop)
    }

    public static func connect(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RedisClient {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: largeValueRecvAllocator)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPDecoder()),
                        RedisClientHandler(),
                    ])
                }
            }
            .connect(host: host, port: port).get()
        return RedisClient(channel: channel)
    }

    /// Sends one encoded command and waits for its reply.
    public func send(_ command: ByteBuffer) async throws -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        channel.writeAndFlush(RedisRequest(buffer: command, promise: promise), promise: nil)
        return try await promise.futureResult.get()
    }

    /// Sends `args` as a command.
    public func command(_ args: [String]) async throws -> RESPValue {
        try await send(RESPEncoder.encode(args.map { Array($0.utf8) }, allocator: channel.allocator))
    }

    public func get(_ key: String) async throws -> Int {
        switch try await send(RESPEncoder.get(key: key, allocator: channel.allocator)) {
        case .bulkString(let b): return b?.readableBytes ?? 0
        case .error(let e): throw BenchError.serverError("Redis GET: \(e)")
        case let other: throw BenchError.protocolError("unexpected Redis GET reply \(other)")
        }
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        switch try await send(RESPEncoder.set(key: key, value: value, allocator: channel.allocator)) {
        case .simpleString: return
        case .error(let e): throw BenchError.serverError("Redis SET: \(e)")
        case let other: throw BenchError.protocolError("unexpected Redis SET reply \(other)")
        }
    }

    public func close() async {
        try? await channel.close()
    }
}
