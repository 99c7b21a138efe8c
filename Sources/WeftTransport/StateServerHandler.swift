#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import WeftCore
import WeftWire

/// One connection of a `StateServer`. Confined to its channel's event loop. It splits the
/// byte stream into frames itself (no separate decoder handler: that hop and its per-frame
/// boxing showed in profiles).
final class StateServerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: ServerShared
    private var context: ChannelHandlerContext?
    private var inFlight = 0
    private var readHeld = false
    private var inReadBatch = false
    private var needsFlush = false
    private var closing = false
    private var watches: [UInt64: ActiveWatch] = [:]
    private var logger: Logger
    private var reader: FrameReader

    struct ActiveWatch {
        var registration: any WatchRegistration
        var sink: ConnectionWatchSink
    }

    init(shared: ServerShared) {
        self.shared = shared
        self.logger = shared.logger
        self.reader = FrameReader(limits: shared.limits.frames)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        let n = shared.connections.wrappingAdd(1, ordering: .relaxed).newValue
        shared.register(context.channel)
        logger[metadataKey: "peer"] = "\(context.remoteAddress.map { "\($0)" } ?? "?")"
        if n > shared.limits.connectionsMax {
            logger.warning("refusing connection: \(n - 1) open, the limit is \(shared.limits.connectionsMax)")
            closeWithError(context: context, WeftError(.overloaded, "too many connections (limit \(shared.limits.connectionsMax))"))
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.connections.wrappingSubtract(1, ordering: .relaxed)
        shared.unregister(context.channel)
        for (_, w) in watches {
            w.registration.cancel()
            w.sink.close()
        }
        watches.removeAll()
        context.fireChannelInactive()
    }

    // MARK: reading requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        inReadBatch = true
        do {
            try reader.read(unwrapInboundIn(data)) { frame in
                handle(context: context, frame)
                return !closing
            }
        } catch {
            logger.warning("closing connection: \(error.description)")
            closeWithError(context: context, WeftError(.malformedRequest, error.description))
        }
    }

    private func handle(context: ChannelHandlerContext, _ frame: InboundFrame) {
        switch frame {
        case .frame(let frame):
            switch RequestCodec.decode(frame, limits: shared.store.limits) {
            case .request(let id, let request):
                serve(context: context, id: id, request)
            case .invalid(let id, let error):
                write(context: context) { $0.writeResponse(id: id, .failure(error)) }
            case .undecodable(let reason):
                logger.warning("closing connection: \(reason)")
                closeWithError(context: context, WeftError(.malformedRequest, reason))
            }
        case .oversized(let header, let frameBytes):
            guard let id = RequestCodec.requestID(ofOversizedHeader: header) else {
                logger.warning("closing connection: oversized frame (\(frameBytes) bytes) with an undecodable header")
                closeWithError(context: context, WeftError(.malformedRequest, "oversized frame with an undecodable header"))
                return
            }
            let limit = shared.limits.frames.frameBytesMax
            write(context: context) {
                $0.writeResponse(id: id, .failure(WeftError(.valueTooLarge, "frame of \(frameBytes) bytes exceeds the limit of \(limit)")))
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadBatch = false
        flushIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let io = error as? IOError, io.errnoCode == ECONNRESET || io.errnoCode == EPIPE {
            context.close(promise: nil)
        } else {
            logger.warning("closing connection: \(error)")
            context.close(promise: nil)
        }
    }

    // MARK: backpressure

    func read(context: ChannelHandlerContext) {
        if inFlight >= shared.limits.inFlightPerConnectionMax || !context.channel.isWritable {
            readHeld = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for (_, w) in watches { w.sink.drain() }
            resumeReadingIfPossible(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readHeld, inFlight < shared.limits.inFlightPerConnectionMax, context.channel.isWritable {
            readHeld = false
            context.read()
        }
    }

    // MARK: serving

    private func serve(context: ChannelHandlerContext, id: UInt64, _ request: ServerRequest) {
        switch request {
        case .state(let stateRequest):
            inFlight += 1
            let loop = context.eventLoop
            let bound = NIOLoopBound(self, eventLoop: loop)
            shared.store.execute(stateRequest) { result in
                if loop.inEventLoop {
                    bound.value.complete(id: id, result)
                } else {
                    loop.execute { bound.value.complete(id: id, result) }
                }
            }
        case .watch(let target, let from, let keysOnly):
            startWatch(context: context, id: id, target: target, from: from, keysOnly: keysOnly)
        case .cancelWatch(let watchID):
            if let w = watches.removeValue(forKey: watchID) {
                w.registration.cancel()
                w.sink.close()
                write(context: context) { $0.writeWatchEnded(id: watchID, error: nil) }
            } else {
                write(context: context) { $0.writeResponse(id: id, .failure(WeftError(.notFound, "no watch \(watchID) on this connection"))) }
            }
        }
    }

    private func complete(id: UInt64, _ result: Result<StateResponse, WeftError>) {
        inFlight -= 1
        guard let context, !closing else { return }
        switch result {
        case .success(.value(let kv)):
            write(context: context, capacity: 96 + kv.key.utf8.count + kv.value.count) { $0.writeResponse(id: id, result) }
        case .success(.list(let entries, let more, let revision)):
            let cut = Self.cutList(entries, bytesMax: shared.limits.listResponseBytesMax)
            write(context: context) {
                $0.writeResponse(id: id, .success(.list(entries: cut, more: more || cut.count < entries.count, revision: revision)))
            }
        case .success(.status):
            let info = shared.info
            write(context: context) { $0.writeResponse(id: id, result, info: info) }
        default:
            write(context: context) { $0.writeResponse(id: id, result) }
        }
        if !inReadBatch { flushIfNeeded(context: context) }
        resumeReadingIfPossible(context: context)
    }

    static func cutList(_ entries: [KeyValue], bytesMax: Int) -> [KeyValue] {
        var total = 0
        for (i, e) in entries.enumerated() {
            total += e.value.count + e.key.utf8.count
            if total > bytesMax { return Array(entries.prefix(max(i, 1))) }
        }
        return entries
    }

    private func startWatch(context: ChannelHandlerContext, id: UInt64, target: WatchTarget, from: Revision?, keysOnly: Bool) {
        guard watches[id] == nil else {
            write(context: context) { $0.writeResponse(id: id, .failure(WeftError(.invalidArgument, "request id \(id) is already a watch"))) }
            return
        }
        guard watches.count < shared.limits.watchesPerConnectionMax else {
            write(context: context) {
                $0.writeResponse(id: id, .failure(WeftError(.overloaded, "too many watches on this connection (limit \(self.shared.limits.watchesPerConnectionMax))")))
            }
            return
        }
        let sink = ConnectionWatchSink(
            watchID: id, eventLoop: context.eventLoop, backlogMax: shared.store.limits.watchBacklogMax,
            handler: NIOLoopBound(self, eventLoop: context.eventLoop))
        do {
            let registration = try shared.store.watch(target, fromRevision: from, includeValues: !keysOnly, sink: sink)
            watches[id] = ActiveWatch(registration: registration, sink: sink)
            write(context: context) { $0.writeWatchCreated(id: id, startRevision: registration.startRevision) }
        } catch {
            sink.close()
            write(context: context) { $0.writeResponse(id: id, .failure(error)) }
        }
    }

    /// Called by a sink on the event loop with the events it has gathered.
    func writeWatchEvents(watchID: UInt64, _ events: [WatchEvent]) -> Bool {
        guard let context, !closing, watches[watchID] != nil else { return false }
        guard context.channel.isWritable else { return false }
        var start = 0
        // Keep frames moderate: at most 256 events per frame.
        while start < events.count {
            let end = min(start + 256, events.count)
            write(context: context) { $0.writeWatchEvents(id: watchID, events[start..<end]) }
            start = end
        }
        flushIfNeeded(context: context)
        return true
    }

    /// Called by a sink on the event loop when the store ended its watch.
    func endWatch(watchID: UInt64, error: WeftError) {
        guard let context, let w = watches.removeValue(forKey: watchID) else { return }
        w.registration.cancel()
        write(context: context) { $0.writeWatchEnded(id: watchID, error: error) }
        flushIfNeeded(context: context)
    }

    // MARK: writing

    private func write(context: ChannelHandlerContext, capacity: Int = 64, _ body: (inout ByteBuffer) -> Void) {
        var buffer = context.channel.allocator.buffer(capacity: capacity)
        body(&buffer)
        context.write(wrapOutboundOut(buffer), promise: nil)
        needsFlush = true
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    private func closeWithError(context: ChannelHandlerContext, _ error: WeftError) {
        guard !closing else { return }
        closing = true
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeConnectionError(error)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }
}
