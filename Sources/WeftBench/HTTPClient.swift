import NIOCore
import NIOHTTP1
import NIOPosix

/// A full HTTP response.
public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: ByteBuffer
    public var status: HTTPResponseStatus { head.status }
}

struct HTTPRequest: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var promise: EventLoopPromise<HTTPResponse>
}

/// Keep-alive HTTP/1.1 client handler: requests are written as they come, responses are
/// matched to them FIFO (pipelining-safe, though the bench issues one at a time).
final class HTTPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPRequest
    typealias OutboundOut = HTTPClientRequestPart

    private var pending = CircularBuffer<EventLoopPromise<HTTPResponse>>(initialCapacity: 4)
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private var closedError: (any Error)?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let e = closedError {
            request.promise.fail(e)
            promise?.fail(e)
            return
        }
        pending.append(request.promise)
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        if let body = request.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = nil
        case .body(var part):
            if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
        case .end:
            guard let h = head, let promise = pending.popFirst() else {
                context.fireErrorCaught(BenchError.protocolError("unsolicited HTTP response"))
                return
            }
            let response = HTTPResponse(head: h, body: body ?? context.channel.allocator.buffer(capacity: 0))
            head = nil
            body = nil
            promise.succeed(response)
            if !h.isKeepAlive {
                failAll(BenchError.connectionClosed("server closed the HTTP connection"))
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(BenchError.connectionClosed("HTTP connection closed"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        if closedError == nil { closedError = error }
        while let p = pending.popFirst() { p.fail(error) }
    }
}

/// A minimal keep-alive HTTP/1.1 client on one connection.
public final class HTTPConnection: Sendable {
    public let channel: any Channel
    public let hostHeader: String

    init(channel: any Channel, hostHeader: String) {
        self.channel = channel
        self.hostHeader = hostHeader
    }

    public static func connect(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> HTTPConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: largeValueRecvAllocator)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPClientHandler())
                }
            }
            .connect(host: host, port: port).get()
        return HTTPConnection(channel: channel, hostHeader: "\(host):\(port)")
    }

    /// Sends a request with `body` (Content-Length framed) and waits for the whole response.
    public func request(
        method: HTTPMethod, uri: String, contentType: String = "application/json", body: ByteBuffer?, headers extra: [(String, String)] = []
    ) async throws -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        for (name, value) in extra { headers.add(name: name, value: value) }
        if let body {
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body.readableBytes))
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
        let promise = channel.eventLoop.makePromise(of: HTTPResponse.self)
        channel.writeAndFlush(HTTPRequest(head: head, body: body, promise: promise), promise: nil)
        return try await promise.futureResult.get()
    }

    public func close() async {
        try? await channel.close()
    }
}
