import NIOCore
import Synchronization
import WeftCore

/// A running etcd watch: the events under its key or prefix, in revision order, on its own
/// connection. It ends with an error (the connection dropped: `.unavailable`; the start
/// revision was compacted: `.compacted`; the consumer fell `eventsBufferedMax` events
/// behind: `.overloaded`; `cancel()`: `.cancelled`); resume from the last revision seen + 1.
/// Call `cancel()` when done: an abandoned watch stays open until its client closes.
public final class EtcdWatch: Sendable {
    /// How many received events may wait for `next()` before the watch ends with `.overloaded`.
    public static let eventsBufferedMax = 100_000

    private struct State {
        var buffered: [EtcdEvent] = []
        var finished: WeftError?
        var waiter: (id: UInt64, continuation: CheckedContinuation<Result<[EtcdEvent], WeftError>, Never>)?
        var nextWaiterID: UInt64 = 0
        var channel: (any Channel)?
    }

    private let state = Mutex(State())
    private let registry: EtcdWatchRegistry?
    let id: UInt64

    init(id: UInt64, registry: EtcdWatchRegistry?) {
        self.id = id
        self.registry = registry
    }

    /// The next events (every event received since the last call, at least one), waiting
    /// for them. Throws the error that ended the watch once the events before it were read,
    /// or `.cancelled` if the calling task is cancelled (the watch stays open then).
    /// One consumer at a time.
    public func next() async throws(WeftError) -> [EtcdEvent] {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<[EtcdEvent], WeftError>, Never>) in
                let ready = state.withLock { s -> Result<[EtcdEvent], WeftError>? in
                    if !s.buffered.isEmpty {
                        let events = s.buffered
                        s.buffered = []
                        return .success(events)
                    }
                    if let e = s.finished { return .failure(e) }
                    if Task.isCancelled { return .failure(WeftError(.cancelled, "waiting for etcd watch events cancelled")) }
                    precondition(s.waiter == nil, "EtcdWatch.next() has a single consumer")
                    s.waiter = (id, continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Result<[EtcdEvent], WeftError>, Never>? in
                guard let w = s.waiter, w.id == id else { return nil }
                s.waiter = nil
                return w.continuation
            }
            waiter?.resume(returning: .failure(WeftError(.cancelled, "waiting for etcd watch events cancelled")))
        }
        return try result.get()
    }

    /// Ends the watch and closes its connection; `next()` throws `.cancelled` from now on.
    public func cancel() {
        finish(WeftError(.cancelled, "etcd watch cancelled"), discardBuffered: true)
    }

    /// True once the watch has ended (its error may still be waiting behind events).
    public var isFinished: Bool { state.withLock { $0.finished != nil } }

    // MARK: Producer side (the watch's channel handler)

    /// Sets the channel to close when the watch ends (closes it at once if it already has).
    func attach(_ channel: any Channel) {
        let alreadyFinished = state.withLock { s -> Bool in
            s.channel = channel
            return s.finished != nil
        }
        if alreadyFinished { channel.close(promise: nil) }
    }

    /// Queues `events` for `next()`; ends the watch with `.overloaded` past `eventsBufferedMax`.
    func deliver(_ events: [EtcdEvent]) {
        guard !events.isEmpty else { return }
        enum Action { case none, resume(CheckedContinuation<Result<[EtcdEvent], WeftError>, Never>), overloaded }
        let action = state.withLock { s -> Action in
            if s.finished != nil { return .none }
            if let w = s.waiter {
                s.waiter = nil
                return .resume(w.continuation)
            }
            if s.buffered.count + events.count > Self.eventsBufferedMax { return .overloaded }
            s.buffered.append(contentsOf: events)
            return .none
        }
        switch action {
        case .none: break
        case .resume(let c): c.resume(returning: .success(events))
        case .overloaded:
            finish(WeftError(.overloaded, "etcd watch consumer more than \(Self.eventsBufferedMax) events behind"), discardBuffered: false)
        }
    }

    /// Ends the watch with `error` (the first error wins), wakes the consumer and closes the
    /// connection.
    func finish(_ error: WeftError, discardBuffered: Bool = false) {
        typealias Continuation = CheckedContinuation<Result<[EtcdEvent], WeftError>, Never>
        let (waiter, channel, first, finalError) = state.withLock { s -> (Continuation?, (any Channel)?, Bool, WeftError) in
            let first = s.finished == nil
            if first { s.finished = error }
            if discardBuffered { s.buffered = [] }
            let w = s.waiter
            s.waiter = nil
            let c = s.channel
            s.channel = nil
            return (w?.continuation, c, first, s.finished ?? error)
        }
        waiter?.resume(returning: .failure(finalError))
        channel?.close(promise: nil)
        if first { registry?.remove(id) }
    }
}

/// The open watches of one client, so that closing the client ends them.
final class EtcdWatchRegistry: Sendable {
    private struct State {
        var watches: [UInt64: EtcdWatch] = [:]
        var nextID: UInt64 = 0
        var closed = false
    }
    private let state = Mutex(State())

    /// A new watch registered here; nil once `cancelAll()` was called.
    func make() -> EtcdWatch? {
        state.withLock { s -> EtcdWatch? in
            guard !s.closed else { return nil }
            s.nextID += 1
            let watch = EtcdWatch(id: s.nextID, registry: self)
            s.watches[s.nextID] = watch
            return watch
        }
    }

    func remove(_ id: UInt64) {
        _ = state.withLock { $0.watches.removeValue(forKey: id) }
    }

    /// Cancels every watch, and every later one at once.
    func cancelAll() {
        let all = state.withLock { s -> [EtcdWatch] in
            s.closed = true
            defer { s.watches = [:] }
            return Array(s.watches.values)
        }
        for w in all { w.cancel() }
    }
}
