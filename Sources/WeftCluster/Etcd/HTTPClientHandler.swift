import NIOCore
import NIOHTTP1
import WeftCore

/// Why a request on an `HTTPConnection` failed, and whether the server may have seen it:
/// a request that was never written can be retried anywhere, even if it is not idempotent.
struct HTTPRequestFailure: Error {
    var error: WeftError
    /// False only when the connection was known to be closed before the request was written.
    var mayHaveBeenSent: Bool
}

/// One request for `HTTPClientHandler`: written as it comes, answered in order.
struct HTTPRequest: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var promise: EventLoopPromise<HTTP1Response>
}

/// Keep-alive HTTP/1.1 client handler: requests are written as they come, responses are
/// matched to them FIFO (pipelining). A response body beyond `responseBytesMax` fails the
/// connection; so does any error, failing every request still waiting.
final class HTTPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPRequest
    typealias OutboundOut = HTTPClientRequestPart

    private let responseBytesMax: Int
    private var pending = CircularBuffer<EventLoopPromise<HTTP1Response>>(initialCapacity: 4)
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private var closedError: WeftError?

    init(responseBytesMax: Int) {
        self.responseBytesMax = responseBytesMax
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let e = closedError {
            request.promise.fail(HTTPRequestFailure(error: e, mayHaveBeenSent: false))
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
            if (body?.readableBytes ?? 0) + part.readableBytes > responseBytesMax {
                fail(WeftError(.internalError, "HTTP response body larger than \(responseBytesMax) bytes"), context: context)
                return
            }
            if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
        case .end:
            guard let h = head, let promise = pending.popFirst() else {
                fail(WeftError(.internalError, "unsolicited HTTP response"), context: context)
                return
            }
            let response = HTTP1Response(head: h, body: body ?? context.channel.allocator.buffer(capacity: 0))
            head = nil
            body = nil
            promise.succeed(response)
            if !h.isKeepAlive {
                fail(WeftError(.unavailable, "the server closed the HTTP connection"), context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(WeftError(.unavailable, "HTTP connection failed: \(error)"), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(WeftError(.unavailable, "HTTP connection closed"))
        context.fireChannelInactive()
    }

    private func fail(_ error: WeftError, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: WeftError) {
        if closedError == nil { closedError = error }
        while let p = pending.popFirst() { p.fail(HTTPRequestFailure(error: error, mayHaveBeenSent: true)) }
    }
}
