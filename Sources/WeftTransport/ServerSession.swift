#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import WeftCore
import WeftWire

/// Serves one connection, whatever its transport: splits the inbound byte stream into frames,
/// runs requests against the store (pipelined, answered as they complete), streams watches and
/// applies backpressure. Confined to its link's event loop.
final class ServerSession: FrameLinkDelegate {
    private let shared: ServerShared
    private var link: (any FrameLink)?
    private var inFlight = 0
    /// `function_next` requests waiting for work (long polls: not counted in `inFlight`).
    private var waitingForWork = 0
    private var inReadBatch = false
    private var needsFlush = false
    private var flushScheduled = false
    private var lazyFlushScheduled = false
    private var closing = false
    private var watches: [UInt64: ActiveWatch] = [:]
    /// This connection as a holder of cached values and a feed of commit notices (made on its
    /// first `cache_get` or `commit_feed`).
    private var pushes: SessionPushes?
    /// The clients this connection named itself as (`commit_feed`).
    private var commitClients: [UInt64] = []
    private var logger: Logger
    private var reader: FrameReader
    /// The request whose answer may carry its value in the arena's down half (it granted it).
    private var arenaGrant: UInt64?

    struct ActiveWatch {
        var registration: any WatchRegistration
        var sink: ConnectionWatchSink
    }

    /// Starts serving `link` (on its loop); refuses it with `overloaded` past the connection limit.
    static func serve(_ link: any FrameLink, shared: ServerShared) {
        let session = ServerSession(shared: shared, link: link)
        link.setDelegate(session)
        let n = shared.connections.wrappingAdd(1, ordering: .relaxed).newValue
        shared.register(link)
        if n > shared.limits.connectionsMax {
            session.logger.warning("refusing connection: \(n - 1) open, the limit is \(shared.limits.connectionsMax)")
            session.closeWithError(WeftError(.overloaded, "too many connections (limit \(shared.limits.connectionsMax))"))
        }
    }

    private init(shared: ServerShared, link: any FrameLink) {
        self.shared = shared
        self.link = link
        self.logger = shared.logger
        self.reader = FrameReader(limits: shared.limits.frames, arena: shared.arena, peerHalf: .up)
        logger[metadataKey: "peer"] = "\(link.peerDescription)"
        logger[metadataKey: "transport"] = "\(link.transportName)"
    }

    func linkClosed(_ error: WeftError?) {
        guard let link else { return }
        self.link = nil
        shared.connections.wrappingSubtract(1, ordering: .relaxed)
        shared.unregister(link)
        if let error { logger.debug("connection ended: \(error)") }
        shared.functions?.closed()
        if let pushes {
            for client in commitClients { shared.cluster?.closeCommitFeed(client: client, feed: pushes) }
        }
        commitClients.removeAll()
        for (_, w) in watches {
            w.registration.cancel()
            w.sink.close()
        }
        watches.removeAll()
    }

    // MARK: reading requests

    var wantsInput: Bool {
        inFlight < shared.limits.inFlightPerConnectionMax && (link?.isWritable ?? false)
    }

    func linkRead(_ bytes: ByteBuffer) {
        guard !closing else { return }
        inReadBatch = true
        do {
            try reader.read(bytes) { frame in
                handle(frame)
                return !closing
            }
        } catch {
            logger.warning("closing connection: \(error.description)")
            closeWithError(WeftError(.malformedRequest, error.description))
        }
    }

    private func handle(_ frame: InboundFrame) {
        switch frame {
        case .frame(let frame):
            switch RequestCodec.decode(frame, limits: shared.store.limits) {
            case .request(let id, let request, let epoch, let replyAt):
                if frame.grantsArena { arenaGrant = id }
                serve(id: id, request, epoch: epoch, replyAt: replyAt)
            case .invalid(let id, let error):
                write { $0.writeResponse(id: id, .failure(error)) }
            case .undecodable(let reason):
                logger.warning("closing connection: \(reason)")
                closeWithError(WeftError(.malformedRequest, reason))
            }
        case .oversized(let header, let frameBytes):
            guard let id = RequestCodec.requestID(ofOversizedHeader: header) else {
                logger.warning("closing connection: oversized frame (\(frameBytes) bytes) with an undecodable header")
                closeWithError(WeftError(.malformedRequest, "oversized frame with an undecodable header"))
                return
            }
            let limit = shared.limits.frames.frameBytesMax
            write {
                $0.writeResponse(id: id, .failure(WeftError(.valueTooLarge, "frame of \(frameBytes) bytes exceeds the limit of \(limit)")))
            }
        }
    }

    func linkReadComplete() {
        inReadBatch = false
        flushIfNeeded()
    }

    // MARK: backpressure

    func linkWritabilityChanged() {
        guard let link, link.isWritable else { return }
        for (_, w) in watches { w.sink.drain() }
        link.resumeInput()
    }

    // MARK: serving

    private func serve(id: UInt64, _ request: ServerRequest, epoch: UInt64, replyAt: ReplyAt? = nil) {
        guard let link else { return }
        switch request {
        case .state(let stateRequest):
            if let cluster = shared.cluster {
                let replyAt = replyAt != nil && cluster.admitsTailReplies ? replyAt : nil
                switch cluster.decide(stateRequest, epoch: epoch, replyAt: replyAt) {
                case .serve: break
                case .answer(let result):
                    inFlight += 1
                    complete(id: id, result)
                    return
                case .later(let run):
                    inFlight += 1
                    // A put the chain's tail answers too: the head's answer only backs it up.
                    let backup = replyAt != nil
                    run(onLoop { session, result in session.complete(id: id, result, lazily: backup) })
                    return
                }
            }
            inFlight += 1
            let loop = link.eventLoop
            let bound = NIOLoopBound(self, eventLoop: loop)
            shared.store.execute(stateRequest) { result in
                if loop.inEventLoop {
                    bound.value.complete(id: id, result)
                } else {
                    loop.execute { bound.value.complete(id: id, result) }
                }
            }
        case .watch(let target, let from, let keysOnly, let shard):
            if let error = shared.cluster?.admitWatch(target, epoch: epoch, shard: shard) {
                write { $0.writeResponse(id: id, .failure(error)) }
                return
            }
            startWatch(id: id, target: target, from: from, keysOnly: keysOnly, shard: shard)
        case .cancelWatch(let watchID):
            if let w = watches.removeValue(forKey: watchID) {
                w.registration.cancel()
                w.sink.close()
                write { $0.writeWatchEnded(id: watchID, error: nil) }
            } else {
                write { $0.writeResponse(id: id, .failure(WeftError(.notFound, "no watch \(watchID) on this connection"))) }
            }
        case .functionNext, .functionResult, .functionInvoke:
            serveFunction(id: id, request)
        case .replicate(let message):
            guard let cluster = shared.cluster else {
                write { $0.writeResponse(id: id, .failure(Self.notClustered)) }
                return
            }
            inFlight += 1
            // The tail answers the client of a change with `replyAt`: the chain's acknowledgements
            // of it may wait to share a write with others.
            let lazily = message.replyAt != nil && cluster.relaysTailReplies
            cluster.replicate(message, epoch: epoch, completion: onLoop { session, result in session.completeReplicate(id: id, result, lazily: lazily) })
        case .cacheGet(let key):
            guard let cluster = shared.cluster else {
                write { $0.writeResponse(id: id, .failure(Self.notClustered)) }
                return
            }
            inFlight += 1
            cluster.cacheGet(
                key, epoch: epoch, holder: pushTarget(link),
                completion: onLoop { session, result in session.completeCacheGet(id: id, result) })
        case .cacheAck(let seq):
            shared.cluster?.cacheAcked(seq: seq)
        case .commitFeed(let client):
            guard let cluster = shared.cluster, !commitClients.contains(client) else { return }
            commitClients.append(client)
            cluster.openCommitFeed(client: client, feed: pushTarget(link))
        case .shardMap:
            guard let cluster = shared.cluster else {
                write { $0.writeResponse(id: id, .failure(Self.notClustered)) }
                return
            }
            let (mapEpoch, json) = cluster.shardMap()
            write(capacity: 64 + json.count) { $0.writeShardMap(id: id, epoch: mapEpoch, json: json) }
        }
    }

    /// A completion that hands its value to `body` on this session's loop (at once when it is
    /// already there). Called on the loop.
    private func onLoop<T: Sendable>(_ body: @escaping @Sendable (ServerSession, T) -> Void) -> @Sendable (T) -> Void {
        let loop = link!.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        return { value in
            if loop.inEventLoop {
                body(bound.value, value)
            } else {
                loop.execute { body(bound.value, value) }
            }
        }
    }

    /// Pushes a cache invalidation to the client (on the loop).
    func pushInvalidate(key: String, seq: UInt64) {
        guard link != nil, !closing else { return }
        write { $0.writeCacheInvalidate(key: key, seq: seq) }
        flushSoon()
    }

    private func pushTarget(_ link: any FrameLink) -> SessionPushes {
        if let pushes { return pushes }
        let made = SessionPushes(session: self, loop: link.eventLoop)
        pushes = made
        return made
    }

    /// Pushes a commit notice to the client (on the loop).
    func pushCommitted(seq: UInt64, version: Revision, length: UInt64) {
        guard link != nil, !closing else { return }
        write { $0.writeCommitted(seq: seq, version: version, length: length) }
        flushSoon()
    }

    private static let notClustered = WeftError(.invalidArgument, "this server is a single node, not a cluster member")

    private func completeCacheGet(id: UInt64, _ result: Result<(KeyValue, UInt32), WeftError>) {
        inFlight -= 1
        guard let link, !closing else { return }
        switch result {
        case .success(let (kv, leaseMs)):
            write(capacity: 96 + kv.key.utf8.count + kv.value.count) { $0.writeCachedValue(id: id, kv, leaseMs: leaseMs) }
        case .failure(let error):
            write { $0.writeResponse(id: id, .failure(error)) }
        }
        flushSoon()
        link.resumeInput()
    }

    private func completeReplicate(id: UInt64, _ result: Result<Revision, WeftError>, lazily: Bool = false) {
        inFlight -= 1
        guard let link, !closing else { return }
        switch result {
        case .success(let revision) where lazily: writeLazily { $0.writeReplicated(id: id, revision: revision) }
        case .success(let revision): write { $0.writeReplicated(id: id, revision: revision) }
        case .failure(let error): write { $0.writeResponse(id: id, .failure(error)) }
        }
        flushSoon()
        link.resumeInput()
    }

    // MARK: functions

    private static let noFunctions = WeftError(.invalidArgument, "this server runs no functions")

    private func serveFunction(id: UInt64, _ request: ServerRequest) {
        guard let link else { return }
        guard let functions = shared.functions else {
            write { $0.writeResponse(id: id, .failure(Self.noFunctions)) }
            return
        }
        let loop = link.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        /// Runs `body` on the loop, at once when already there.
        @Sendable func onLoop(_ body: @escaping @Sendable () -> Void) {
            if loop.inEventLoop { body() } else { loop.execute(body) }
        }
        switch request {
        case .functionNext:
            guard waitingForWork < shared.limits.inFlightPerConnectionMax else {
                write { $0.writeResponse(id: id, .failure(WeftError(.overloaded, "too many function_next requests waiting on this connection"))) }
                return
            }
            waitingForWork += 1
            functions.next { result in
                onLoop { bound.value.completeNext(id: id, result) }
            }
        case .functionResult(let invocationID, let output, let error):
            functions.result(invocationID: invocationID, output: output, error: error)
            write { $0.writeOK(id: id) }
        case .functionInvoke(let function, let input, let async):
            inFlight += 1
            functions.invoke(function: function, input: input, async: async) { result in
                onLoop { bound.value.completeInvoke(id: id, result) }
            }
        default:
            preconditionFailure("not a function request")
        }
    }

    private func completeNext(id: UInt64, _ result: Result<FunctionInvocation, WeftError>) {
        waitingForWork -= 1
        guard link != nil, !closing else { return }
        switch result {
        case .success(let invocation):
            write(capacity: 128 + invocation.input.count) { $0.writeFunctionInvocation(id: id, invocation) }
        case .failure(let error):
            write { $0.writeResponse(id: id, .failure(error)) }
        }
        flushSoon()
    }

    private func completeInvoke(id: UInt64, _ result: Result<(String, [UInt8]), WeftError>) {
        inFlight -= 1
        guard let link, !closing else { return }
        switch result {
        case .success(let (invocationID, output)):
            write(capacity: 96 + output.count) { $0.writeFunctionOutput(id: id, invocationID: invocationID, output: output) }
        case .failure(let error):
            write { $0.writeResponse(id: id, .failure(error)) }
        }
        flushSoon()
        link.resumeInput()
    }

    private func complete(id: UInt64, _ result: Result<StateResponse, WeftError>, lazily: Bool = false) {
        if lazily, case .success(.written) = result, let link, !closing {
            inFlight -= 1
            writeLazily { $0.writeResponse(id: id, result) }
            link.resumeInput()
            return
        }
        inFlight -= 1
        let granted = arenaGrant == id
        if granted { arenaGrant = nil }
        guard let link, !closing else { return }
        switch result {
        case .success(.value(let kv)) where granted && shared.arena?.carries(kv.value.count) == true:
            write(capacity: 96 + kv.key.utf8.count) { $0.writeValueResponse(id: id, kv, arena: shared.arena!) }
        case .success(.value(let kv)):
            write(capacity: 96 + kv.key.utf8.count + kv.value.count) { $0.writeResponse(id: id, result) }
        case .success(.list(let entries, let more, let revision)):
            let cut = Self.cutList(entries, bytesMax: shared.limits.listResponseBytesMax)
            write {
                $0.writeResponse(id: id, .success(.list(entries: cut, more: more || cut.count < entries.count, revision: revision)))
            }
        case .success(.status):
            let info = shared.info(transport: link.transportName)
            write { $0.writeResponse(id: id, result, info: info) }
        default:
            write { $0.writeResponse(id: id, result) }
        }
        flushSoon()
        link.resumeInput()
    }

    static func cutList(_ entries: [KeyValue], bytesMax: Int) -> [KeyValue] {
        var total = 0
        for (i, e) in entries.enumerated() {
            total += e.value.count + e.key.utf8.count
            if total > bytesMax { return Array(entries.prefix(max(i, 1))) }
        }
        return entries
    }

    private func startWatch(id: UInt64, target: WatchTarget, from: Revision?, keysOnly: Bool, shard: Int?) {
        guard let link else { return }
        guard watches[id] == nil else {
            write { $0.writeResponse(id: id, .failure(WeftError(.invalidArgument, "request id \(id) is already a watch"))) }
            return
        }
        guard watches.count < shared.limits.watchesPerConnectionMax else {
            write {
                $0.writeResponse(id: id, .failure(WeftError(.overloaded, "too many watches on this connection (limit \(self.shared.limits.watchesPerConnectionMax))")))
            }
            return
        }
        let sink = ConnectionWatchSink(
            watchID: id, eventLoop: link.eventLoop, backlogMax: shared.store.limits.watchBacklogMax,
            handler: NIOLoopBound(self, eventLoop: link.eventLoop))
        do {
            let registration = try shared.store.watch(target, fromRevision: from, includeValues: !keysOnly, sink: sink, shard: shard)
            watches[id] = ActiveWatch(registration: registration, sink: sink)
            write { $0.writeWatchCreated(id: id, startRevision: registration.startRevision) }
        } catch {
            sink.close()
            write { $0.writeResponse(id: id, .failure(error)) }
        }
    }

    /// Called by a sink on the event loop with the events it has gathered.
    func writeWatchEvents(watchID: UInt64, _ events: [WatchEvent]) -> Bool {
        guard let link, !closing, watches[watchID] != nil else { return false }
        guard link.isWritable else { return false }
        var start = 0
        // Keep frames moderate: at most 256 events per frame.
        while start < events.count {
            let end = min(start + 256, events.count)
            write { $0.writeWatchEvents(id: watchID, events[start..<end]) }
            start = end
        }
        flushIfNeeded()
        return true
    }

    /// Called by a sink on the event loop when the store ended its watch.
    func endWatch(watchID: UInt64, error: WeftError) {
        guard link != nil, let w = watches.removeValue(forKey: watchID) else { return }
        w.registration.cancel()
        write { $0.writeWatchEnded(id: watchID, error: error) }
        flushIfNeeded()
    }

    // MARK: writing

    private func write(capacity: Int = 64, _ body: (inout ByteBuffer) -> Void) {
        guard let link else { return }
        var buffer = link.allocator.buffer(capacity: capacity)
        body(&buffer)
        link.write(buffer)
        needsFlush = true
    }

    /// Writes an answer that no one waits for soon (a chain's acknowledgement, or the head's
    /// answer, of a put whose tail told its client): sent with the next flush, or within
    /// `lazyFlushMicros`. Acknowledgements so share writes, and wake their receivers less.
    private func writeLazily(capacity: Int = 64, _ body: (inout ByteBuffer) -> Void) {
        guard let link else { return }
        var buffer = link.allocator.buffer(capacity: capacity)
        body(&buffer)
        link.write(buffer)
        guard !lazyFlushScheduled else { return }
        lazyFlushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: link.eventLoop)
        link.eventLoop.scheduleTask(in: .microseconds(Self.lazyFlushMicros)) {
            bound.value.lazyFlushScheduled = false
            bound.value.link?.flush()
        }
    }

    static let lazyFlushMicros: Int64 = 1_000

    /// Flushes what completions wrote, once per loop tick: inside a read batch the batch's end
    /// flushes; otherwise (answers completing on other threads, e.g. a chain's acknowledgements)
    /// one task flushes every answer that completed before it runs, in one syscall.
    private func flushSoon() {
        guard !inReadBatch, needsFlush, !flushScheduled, let link else { return }
        flushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: link.eventLoop)
        link.eventLoop.execute {
            bound.value.flushScheduled = false
            bound.value.flushIfNeeded()
        }
    }

    private func flushIfNeeded() {
        if needsFlush {
            needsFlush = false
            link?.flush()
        }
    }

    private func closeWithError(_ error: WeftError) {
        guard !closing, let link else { return }
        closing = true
        var buffer = link.allocator.buffer(capacity: 64)
        buffer.writeConnectionError(error)
        link.write(buffer)
        link.flush()
        link.close()
    }
}

/// What a chain's tail pushes to a client's connection, written on its loop: cache
/// invalidations (as a `CacheHolder`) and commit notices (as a `CommitFeed`). It holds the
/// session weakly: once the connection is gone they go nowhere (a write then waits for the
/// cache lease to end; a put's client has the head's answer).
final class SessionPushes: CacheHolder, CommitFeed {
    private final class Weak {
        weak var session: ServerSession?
        init(_ session: ServerSession) { self.session = session }
    }

    private let box: NIOLoopBound<Weak>
    private let loop: any EventLoop

    init(session: ServerSession, loop: any EventLoop) {
        self.box = NIOLoopBound(Weak(session), eventLoop: loop)
        self.loop = loop
    }

    func invalidate(key: String, seq: UInt64) {
        let box = self.box
        loop.execute { box.value.session?.pushInvalidate(key: key, seq: seq) }
    }

    func committed(seq: UInt64, version: Revision, length: UInt64) {
        if loop.inEventLoop {
            box.value.session?.pushCommitted(seq: seq, version: version, length: length)
        } else {
            let box = self.box
            loop.execute { box.value.session?.pushCommitted(seq: seq, version: version, length: length) }
        }
    }
}
