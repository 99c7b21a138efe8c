import NIOCore
import WeftCore
import WeftWire

/// What the client writes into its channel: a request plus how to deliver its answer.
struct OutboundRequest {
    enum Reply {
        case unary(EventLoopPromise<ClientResponse>)
        case watch(WatchStream)
        case none
    }
    var request: ServerRequest
    var reply: Reply
    var deadline: NIODeadline
}

/// Matches responses to requests by id on one connection; confined to the channel's loop.
/// Splits the byte stream into frames itself (as the server's handler does).
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutboundRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<ClientResponse>
        var deadline: NIODeadline
    }

    private var nextID: UInt64 = 1
    private var pending: [UInt64: Pending] = [:]
    private var watches: [UInt64: WatchStream] = [:]
    private var sweep: RepeatedTask?
    private var failed: WeftError?
    private var reader = FrameReader(limits: FrameLimits(frameBytesMax: Int(Int32.max)))

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sweep = context.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
            bound.value.expire()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweep?.cancel()
        sweep = nil
        failAll(WeftError(.unavailable, "connection closed"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(WeftError(.unavailable, "connection to the server closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(WeftError(.unavailable, "connection failed: \(error)"))
        context.close(promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let out = unwrapOutboundIn(data)
        if let failed {
            if case .unary(let p) = out.reply { p.fail(failed) }
            if case .watch(let w) = out.reply { w.finish(failed) }
            promise?.fail(failed)
            return
        }
        let id = nextID
        nextID &+= 1
        switch out.reply {
        case .unary(let p): pending[id] = Pending(promise: p, deadline: out.deadline)
        case .watch(let w):
            w.attach(id: id, channel: context.channel)
            watches[id] = w
        case .none: break
        }
        var buffer = context.channel.allocator.buffer(capacity: 96 + out.request.payloadBytes)
        buffer.writeRequest(id: id, out.request)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.read(unwrapInboundIn(data)) { frame in
                guard case .frame(let frame) = frame else {
                    errorCaught(context: context, error: WeftError(.malformedRequest, "server sent an oversized frame"))
                    return false
                }
                handle(context: context, frame)
                return failed == nil
            }
        } catch {
            errorCaught(context: context, error: WeftError(.malformedRequest, "server sent a malformed frame: \(error.description)"))
        }
    }

    private func handle(context: ChannelHandlerContext, _ frame: RawFrame) {
        let id: UInt64
        let response: ClientResponse
        do {
            (id, response) = try ResponseCodec.decode(frame)
        } catch {
            errorCaught(context: context, error: error)
            return
        }
        if id == 0 {
            // An error about the connection itself; the server closes it next.
            if case .state(.failure(let error)) = response { failAll(error) }
            return
        }
        if let p = pending.removeValue(forKey: id) {
            p.promise.succeed(response)
            return
        }
        if let w = watches[id] {
            switch response {
            case .watchCreated(let start): w.created(startRevision: start)
            case .watchEvents(let events): w.receive(events)
            case .watchEnded(let error):
                watches[id] = nil
                w.finish(error)
            case .state(.failure(let error)):
                watches[id] = nil
                w.finish(error)
            default:
                break
            }
        }
    }

    private func expire() {
        let now = NIODeadline.now()
        let late = pending.filter { $0.value.deadline < now }
        for (id, p) in late {
            pending[id] = nil
            p.promise.fail(WeftError(.timeout, "no answer from the server in time"))
        }
    }

    private func failAll(_ error: WeftError) {
        if failed == nil { failed = error }
        let p = pending
        pending.removeAll()
        for (_, v) in p { v.promise.fail(error) }
        let w = watches
        watches.removeAll()
        for (_, v) in w { v.finish(error) }
    }

    func forgetWatch(id: UInt64) {
        watches[id] = nil
    }
}
