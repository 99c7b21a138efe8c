import NIOCore
import NIOHTTP1
import NIOPosix
import WeftCore

/// A complete HTTP/1.1 response: head and the whole body.
public struct HTTP1Response: Sendable {
    public var head: HTTPResponseHead
    public var body: ByteBuffer
    public var status: HTTPResponseStatus { head.status }

    public init(head: HTTPResponseHead, body: ByteBuffer) {
        self.head = head
        self.body = body
    }
}

/// A minimal keep-alive HTTP/1.1 client on one connection. Concurrent requests are pipelined
/// and answered in order. Any failure (including a request's timeout) closes the connection
/// and fails every request still waiting on it: open a new one to go on.
public final class HTTPConnection: Sendable {
    /// The default bound on one response body: 64 MiB.
    public static let defaultResponseBytesMax = 64 << 20

    public let channel: any Channel
    /// `host:port`, sent as the Host header.
    public let hostHeader: String

    init(channel: any Channel, hostHeader: String) {
        self.channel = channel
        self.hostHeader = hostHeader
    }

    /// Read buffers that grow up to 1 MiB, so large values arrive in few reads.
    static let recvAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 4096, maximum: 1 << 20)

    /// Connects to `host:port`. Throws `.unavailable` if the connection cannot be made within
    /// `connectTimeout`.
    public static func connect(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(10), responseBytesMax: Int = defaultResponseBytesMax
    ) async throws(WeftError) -> HTTPConnection {
        do {
            let channel = try await bootstrap(group: group, connectTimeout: connectTimeout) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPClientHandler(responseBytesMax: responseBytesMax))
                }
            }
            .connect(host: host, port: port).get()
            return HTTPConnection(channel: channel, hostHeader: hostHeader(host: host, port: port))
        } catch {
            throw WeftError(.unavailable, "cannot connect to \(host):\(port): \(error)")
        }
    }

    /// The client bootstrap every HTTP connection of this module uses (no Nagle, large reads).
    static func bootstrap(
        group: any EventLoopGroup, connectTimeout: TimeAmount,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> ClientBootstrap {
        ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: recvAllocator)
            .channelInitializer(initializer)
    }

    /// `host:port`, with brackets around an IPv6 address.
    static func hostHeader(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// False once the connection has closed (it never reopens).
    public var isActive: Bool { channel.isActive }

    /// Sends a request with `body` (Content-Length framed) and waits for the whole response.
    /// Throws `.unavailable` if the connection fails, `.timeout` after `timeout` (which also
    /// closes the connection: a late response would be taken for the next request's).
    public func request(
        method: HTTPMethod, uri: String, contentType: String = "application/json", body: ByteBuffer?,
        headers extra: [(String, String)] = [], timeout: TimeAmount? = nil
    ) async throws(WeftError) -> HTTP1Response {
        try await send(method: method, uri: uri, contentType: contentType, body: body, headers: extra, timeout: timeout)
            .mapError(\.error).get()
    }

    /// As `request`, but tells whether a failed request may have reached the server.
    func send(
        method: HTTPMethod, uri: String, contentType: String = "application/json", body: ByteBuffer?,
        headers extra: [(String, String)] = [], timeout: TimeAmount?
    ) async -> Result<HTTP1Response, HTTPRequestFailure> {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        for (name, value) in extra { headers.add(name: name, value: value) }
        if let body {
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body.readableBytes))
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: HTTP1Response.self)
        if let timeout {
            let timer = channel.eventLoop.scheduleTask(in: timeout) {
                promise.fail(HTTPRequestFailure(
                    error: WeftError(.timeout, "no HTTP response to \(uri) within \(timeout.nanoseconds / 1_000_000) ms"),
                    mayHaveBeenSent: true))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
        }
        // A write on a channel that already closed never reaches the handler: fail it here.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in
            let neverWritten = (error as? ChannelError) == .ioOnClosedChannel
            promise.fail(HTTPRequestFailure(
                error: WeftError(.unavailable, "HTTP request to \(uri) not written: \(error)"), mayHaveBeenSent: !neverWritten))
        }
        channel.writeAndFlush(HTTPRequest(head: head, body: body, promise: promise), promise: written)
        do {
            return .success(try await promise.futureResult.get())
        } catch let failure as HTTPRequestFailure {
            return .failure(failure)
        } catch {
            return .failure(HTTPRequestFailure(error: WeftError(.unavailable, "HTTP request to \(uri) failed: \(error)"), mayHaveBeenSent: true))
        }
    }

    /// Closes the connection; requests still waiting fail with `.unavailable`.
    public func close() async {
        try? await channel.close()
    }
}
