import Synchronization
import WeftCore

/// One watch stream's bridge from the store to the HTTP response: a `WatchSink` whose events
/// queue (bounded) until the response writer takes them.
///
/// Events a watch replays from history arrive while `watch(...)` registers, shard after
/// shard; they are held until `startStreaming()` and then emitted sorted by revision, so a
/// resumed stream (`Last-Event-ID`) sees history in revision order. Once more than
/// `backlogMax` events wait (a slow client), `deliver` refuses, the store ends the watch with
/// `compacted`, and the stream says so and ends.
final class SSEWatchSink: WatchSink, Sendable {
    enum Item: Sendable {
        case event(WatchEvent)
        case heartbeat
    }

    private struct State {
        var replaying = true
        var held: [WatchEvent] = []
        var endError: WeftError?
    }

    let items: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private let state = Mutex(State())
    private let backlogMax: Int

    init(backlogMax: Int) {
        self.backlogMax = backlogMax
        (items, continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(backlogMax))
    }

    func deliver(_ event: WatchEvent) -> Bool {
        state.withLock { state in
            guard state.endError == nil else { return false }
            if state.replaying {
                guard state.held.count < backlogMax else { return false }
                state.held.append(event)
                return true
            }
            if case .enqueued = continuation.yield(.event(event)) { return true }
            return false
        }
    }

    func terminate(_ error: WeftError) {
        end(error)
    }

    /// Emits the held replay in revision order and passes later events straight through.
    func startStreaming() {
        state.withLock { state in
            guard state.replaying else { return }
            state.replaying = false
            state.held.sort { $0.revision < $1.revision }
            for event in state.held {
                guard case .enqueued = continuation.yield(.event(event)) else {
                    state.endError = WeftError(.compacted, "watcher fell behind")
                    break
                }
            }
            state.held = []
        }
        if let error = endError { end(error) }
    }

    /// A keep-alive comment; dropped when the queue is full (the stream is busy anyway).
    func heartbeat() {
        continuation.yield(.heartbeat)
    }

    /// Ends the stream after the events already queued; the first reason given wins.
    func end(_ error: WeftError) {
        state.withLock { state in
            if state.endError == nil { state.endError = error }
        }
        continuation.finish()
    }

    /// Why the stream ended (nil while it runs).
    var endError: WeftError? { state.withLock { $0.endError } }
}

/// The open watch streams of a gateway: bounded in number, and all ended by `stop()`.
final class WatchStreams: Sendable {
    private struct State {
        var streams: [ObjectIdentifier: SSEWatchSink] = [:]
        var closed = false
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Registers a stream; `overloaded` at the limit, `unavailable` once closed.
    func add(_ sink: SSEWatchSink) throws(WeftError) {
        let result: WeftError? = state.withLock { state in
            if state.closed { return WeftError(.unavailable, "the gateway is shutting down") }
            guard state.streams.count < limit else { return WeftError(.overloaded, "too many watch streams (\(limit))") }
            state.streams[ObjectIdentifier(sink)] = sink
            return nil
        }
        if let result { throw result }
    }

    func remove(_ sink: SSEWatchSink) {
        _ = state.withLock { $0.streams.removeValue(forKey: ObjectIdentifier(sink)) }
    }

    var count: Int { state.withLock { $0.streams.count } }

    /// Accepts streams again (a stopped gateway that starts anew).
    func reopen() {
        state.withLock { $0.closed = false }
    }

    /// Ends every stream and refuses new ones.
    func closeAll() {
        let sinks = state.withLock { state -> [SSEWatchSink] in
            state.closed = true
            return Array(state.streams.values)
        }
        for sink in sinks { sink.end(WeftError(.unavailable, "the gateway is shutting down")) }
    }
}
