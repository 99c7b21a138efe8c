import NIOCore
import Synchronization
import WeftCore
import WeftTransport
import WeftWire

/// What the client sends: a request plus how to deliver its answer.
struct OutboundRequest {
    enum Reply {
        case unary(EventLoopPromise<ClientResponse>)
        case watch(WatchStream)
        case none
    }
    var request: ServerRequest
    var reply: Reply
    var deadline: NIODeadline
    /// Cluster mode: the shard-map epoch the request was routed with (0 = not routed).
    var epoch: UInt64 = 0
    /// Cluster mode, a put to a chain's head: the client the tail tells once it is committed.
    var replyAt: ReplyAt? = nil
}

/// One connection of a client, on any transport: numbers requests, matches responses to them by
/// id, feeds watches, and times out requests that get no answer. Confined to its link's event
/// loop, except `isOpen` and `submit`, which any thread may call.
final class ClientSession: FrameLinkDelegate, @unchecked Sendable {
    private struct Pending {
        var promise: EventLoopPromise<ClientResponse>
        var deadline: NIODeadline
    }

    let link: any FrameLink
    private var nextID: UInt64 = 1
    private var pending: [UInt64: Pending] = [:]
    private var watches: [UInt64: WatchStream] = [:]
    private var sweep: RepeatedTask?
    private var failed: WeftError?
    private var reader: FrameReader
    /// Memory shared with the server (see `SharedArena`), and the request using each half: the
    /// put whose value is in the up half until its answer, the get granted the down half until
    /// its answer is read. A half whose request timed out is never used again on this
    /// connection (the server may still read or write it).
    private let arena: SharedArena?
    private var upHalfUser: UInt64?
    private var downHalfUser: UInt64?
    private var upHalfRetired = false
    private var downHalfRetired = false
    private let open = Atomic<Bool>(true)
    private let outbox = Mutex<[OutboundRequest]>([])
    private let drainScheduled = Atomic<Bool>(false)

    /// Called (on the loop) when the server says a cached key must be dropped.
    private var onInvalidate: (@Sendable (String) -> Void)?
    /// Called (on the loop) when a chain's tail says a put of this client is committed.
    private var onCommitted: (@Sendable (_ seq: UInt64, _ version: Revision, _ length: UInt64) -> Void)?

    /// Attaches a session to `link`; on the link's loop, before any input. With `pushes`'
    /// commit feed, the connection first names the client (`commit_feed`).
    static func attach(to link: any FrameLink, pushes: ServerPushes = ServerPushes(), arena: SharedArena? = nil) -> ClientSession {
        let session = ClientSession(link: link, arena: arena)
        session.onInvalidate = pushes.onInvalidate
        session.onCommitted = pushes.onCommitted
        link.setDelegate(session)
        if let client = pushes.commitFeedClient {
            session.submit(OutboundRequest(request: .commitFeed(client: client), reply: .none, deadline: .distantFuture))
        }
        let loop = link.eventLoop
        let bound = NIOLoopBound(session, eventLoop: loop)
        session.sweep = loop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
            bound.value.expire()
        }
        return session
    }

    private init(link: any FrameLink, arena: SharedArena?) {
        self.link = link
        self.arena = arena
        self.reader = FrameReader(limits: FrameLimits(frameBytesMax: Int(Int32.max)), arena: arena, peerHalf: .down)
    }

    /// False once the link has closed: the pool then opens a new one.
    var isOpen: Bool { open.load(ordering: .relaxed) }

    var eventLoop: any EventLoop { link.eventLoop }

    /// Sends a request from any thread. Requests go out in the order `submit` was called, also
    /// when callers on the link's loop and on other threads interleave (a chain's replication
    /// stream depends on it): every request passes through one queue, drained on the loop.
    func submit(_ out: OutboundRequest) {
        let loop = link.eventLoop
        outbox.withLock { $0.append(out) }
        // Drained by a task, also on the loop: requests submitted in one loop tick (a chain
        // node forwarding the changes of a read batch) then share one write syscall.
        if !drainScheduled.exchange(true, ordering: .acquiringAndReleasing) {
            loop.execute {
                self.drainScheduled.store(false, ordering: .releasing)
                self.drainOutbox()
            }
        }
    }

    private func drainOutbox() {
        let items = outbox.withLock { q in
            defer { q.removeAll(keepingCapacity: true) }
            return q
        }
        for out in items { send(out) }
        // One flush for the batch: a burst of pipelined requests (a chain's replication stream
        // under load) shares one syscall.
        if !items.isEmpty { link.flush() }
    }

    private func send(_ out: OutboundRequest) {
        guard failed == nil else {
            let error = failed ?? WeftError(.unavailable, "connection closed")
            if case .unary(let p) = out.reply { p.fail(error) }
            if case .watch(let w) = out.reply { w.finish(error) }
            return
        }
        let id = nextID
        nextID &+= 1
        switch out.reply {
        case .unary(let p): pending[id] = Pending(promise: p, deadline: out.deadline)
        case .watch(let w):
            w.attach(id: id, session: self)
            watches[id] = w
        case .none: break
        }
        guard let arena else {
            var buffer = link.allocator.buffer(capacity: 96 + out.request.payloadBytes)
            buffer.writeRequest(id: id, out.request, epoch: out.epoch, replyAt: out.replyAt)
            link.write(buffer)
            return
        }
        var unary = false
        if case .unary = out.reply { unary = true }
        let useUp = unary && upHalfUser == nil && !upHalfRetired
        var buffer = link.allocator.buffer(capacity: 96 + (useUp && arena.carries(out.request.payloadBytes) ? 0 : out.request.payloadBytes))
        let half = buffer.writeRequest(
            id: id, out.request, epoch: out.epoch, arena: arena,
            useUpHalf: useUp, grantDownHalf: unary && downHalfUser == nil && !downHalfRetired)
        switch half {
        case .up: upHalfUser = id
        case .down: downHalfUser = id
        case nil: break
        }
        link.write(buffer)
    }

    // MARK: FrameLinkDelegate

    var wantsInput: Bool { true }

    func linkRead(_ bytes: ByteBuffer) {
        do {
            try reader.read(bytes) { frame in
                guard case .frame(let frame) = frame else {
                    fail(WeftError(.malformedRequest, "server sent an oversized frame"))
                    return false
                }
                handle(frame)
                return failed == nil
            }
        } catch {
            fail(WeftError(.malformedRequest, "server sent a malformed frame: \(error.description)"))
        }
    }

    func linkReadComplete() {}

    func linkWritabilityChanged() {}

    func linkClosed(_ error: WeftError?) {
        sweep?.cancel()
        sweep = nil
        failAll(error ?? WeftError(.unavailable, "connection to the server closed"))
    }

    private func handle(_ frame: RawFrame) {
        let id: UInt64
        let response: ClientResponse
        do {
            (id, response) = try ResponseCodec.decode(frame)
        } catch {
            fail(error)
            return
        }
        if arena != nil {
            // The answer frees the half its request used (a put's value was read before it was
            // answered; a granted get's value was just copied out by the decoding).
            if frame.arenaPayload != nil && (id != downHalfUser || id == 0) {
                fail(WeftError(.malformedRequest, "server put answer \(id) in the arena without a grant"))
                return
            }
            if id == upHalfUser { upHalfUser = nil }
            if id == downHalfUser { downHalfUser = nil }
        }
        if id == 0 {
            switch response {
            case .cacheInvalidate(let key, let seq):
                // Drop the key first, then confirm: the writer waits for the confirmation.
                onInvalidate?(key)
                submit(OutboundRequest(request: .cacheAck(seq: seq), reply: .none, deadline: .distantFuture))
            case .committed(let seq, let version, let length):
                onCommitted?(seq, version, length)
            case .state(.failure(let error)):
                // An error about the connection itself; the server closes it next.
                failAll(error)
            default:
                break
            }
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

    /// A broken connection: fail everything and close it.
    private func fail(_ error: WeftError) {
        failAll(error)
        link.close()
    }

    private func expire() {
        let now = NIODeadline.now()
        let late = pending.filter { $0.value.deadline < now }
        for (id, p) in late {
            pending[id] = nil
            if id == upHalfUser { upHalfRetired = true }
            if id == downHalfUser { downHalfRetired = true }
            p.promise.fail(WeftError(.timeout, "no answer from the server in time"))
        }
    }

    private func failAll(_ error: WeftError) {
        if failed == nil { failed = error }
        open.store(false, ordering: .relaxed)
        let p = pending
        pending.removeAll()
        for (_, v) in p { v.promise.fail(error) }
        let w = watches
        watches.removeAll()
        for (_, v) in w { v.finish(error) }
    }

    /// Ends a watch on the server (from any thread).
    func cancelWatch(id: UInt64) {
        link.eventLoop.execute {
            guard self.watches.removeValue(forKey: id) != nil else { return }
            self.send(OutboundRequest(request: .cancelWatch(watchID: id), reply: .none, deadline: .distantFuture))
            self.link.flush()
        }
    }

    /// Closes the link (from any thread).
    func close() {
        link.close()
    }
}

/// What a client does with what a server sends unasked (response id 0).
struct ServerPushes: Sendable {
    /// A cached key must be dropped.
    var onInvalidate: (@Sendable (String) -> Void)? = nil
    /// A put this client numbered `seq` is committed (see `ReplyAt`).
    var onCommitted: (@Sendable (_ seq: UInt64, _ version: Revision, _ length: UInt64) -> Void)? = nil
    /// The client id each connection names itself with, so that tails can tell it of commits.
    var commitFeedClient: UInt64? = nil
}
